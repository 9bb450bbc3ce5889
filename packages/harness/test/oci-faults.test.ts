import { existsSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, test } from 'vitest'
import { isHarnessError, type HarnessErrorCode } from '../src/errors.js'
import { pullMixtape } from '../src/mixtape/pull.js'
import { publishMixtape, sha256, syntheticMixtape, type Proxy, type Registry, tempDir, registryWithProxy } from './support/registry.js'

const FAST_RETRY = { attempts: 3, baseMs: 20, maxMs: 100 }

let registry: Registry
let proxy: Proxy
registryWithProxy((r, p) => {
  registry = r
  proxy = p
})

/** Pull into a fresh cache; the failure must be `code` with `pattern`, and the cache must hold no entry. */
async function expectFailure(ref: string, code: HarnessErrorCode, pattern: RegExp): Promise<string> {
  const base = tempDir('sh-mb-')
  const err = await pullMixtape(ref, { base, arch: 'x86_64', retry: FAST_RETRY }).catch((e: unknown) => e)
  expect(isHarnessError(err, code), String(err)).toBe(true)
  expect((err as Error).message).toMatch(pattern)
  expect((err as Error).message).toContain('Fix: ')
  expect(existsSync(join(base, 'mixtapes')) ? readdirSync(join(base, 'mixtapes')) : []).toEqual([])
  expect(existsSync(join(base, 'stereos-harness', 'tmp')) ? readdirSync(join(base, 'stereos-harness', 'tmp')) : []).toEqual([])
  return base
}

describe('bad content from the registry: a clear error and no cache entry', () => {
  test('a corrupted blob (one byte flipped in transit) fails its digest check and is not stored', async () => {
    const m = syntheticMixtape('x86_64')
    await publishMixtape(registry.url, 'mixtapes/corrupt', 'v1', { archs: ['x86_64'], mixtapes: { x86_64: m } })
    const kernel = sha256(m.files.bzImage)
    proxy.fault = (req) => (req.path.endsWith(kernel) ? { flipByteAt: 100 } : undefined)
    try {
      const base = await expectFailure(
        `${proxy.host}/mixtapes/corrupt:v1`,
        'MIXTAPE_INVALID',
        new RegExp(`blob ${kernel} from the registry hashes to sha256:[0-9a-f]{64}: its content is not what the manifest names`),
      )
      expect(existsSync(join(base, 'stereos-harness', 'blobs', 'sha256', kernel.slice(7)))).toBe(false)
      expect(existsSync(join(base, 'stereos-harness', 'partial', 'sha256', kernel.slice(7)))).toBe(false)
    } finally {
      proxy.fault = undefined
    }
  })

  test('a blob served under the wrong digest (other content of the same size) is refused', async () => {
    const m = syntheticMixtape('x86_64')
    await publishMixtape(registry.url, 'mixtapes/wrongdigest', 'v1', { archs: ['x86_64'], mixtapes: { x86_64: m } })
    const initrd = sha256(m.files.initrd)
    proxy.fault = (req) => (req.path.endsWith(initrd) ? { body: Buffer.alloc(m.files.initrd.length, 7) } : undefined)
    try {
      await expectFailure(
        `${proxy.host}/mixtapes/wrongdigest:v1`,
        'MIXTAPE_INVALID',
        new RegExp(`blob ${initrd} from the registry hashes to ${sha256(Buffer.alloc(m.files.initrd.length, 7))}`),
      )
    } finally {
      proxy.fault = undefined
    }
  })

  test('a manifest whose content does not match its digest is refused', async () => {
    const published = await publishMixtape(registry.url, 'mixtapes/badmanifest', 'v1', { archs: ['x86_64'] })
    const child = published.manifests['x86_64/raw']!
    proxy.fault = (req) => (req.path.endsWith(`/manifests/${child}`) ? { body: Buffer.from('{"schemaVersion":2,"layers":[]}') } : undefined)
    try {
      await expectFailure(
        `${proxy.host}/mixtapes/badmanifest:v1`,
        'MIXTAPE_INVALID',
        new RegExp(`served a manifest for mixtapes/badmanifest@${child} whose content hashes to sha256:`),
      )
    } finally {
      proxy.fault = undefined
    }
  })

  test('a stream that keeps ending early fails after the retries, keeping the partial bytes for a resume', async () => {
    const m = syntheticMixtape('x86_64', { diskBytes: 128 * 1024 })
    await publishMixtape(registry.url, 'mixtapes/truncated', 'v1', { archs: ['x86_64'], mixtapes: { x86_64: m } })
    const disk = sha256(m.zst.raw)
    // The first response stops at 10 KiB; every resumed one ends before its first byte.
    proxy.fault = (req) => (req.path.endsWith(disk) ? { truncateAt: req.range ? 0 : 10 * 1024 } : undefined)
    try {
      const base = await expectFailure(
        `${proxy.host}/mixtapes/truncated:v1`,
        'REGISTRY',
        new RegExp(`downloading blob ${disk} failed after 3 attempt\\(s\\) without progress, at byte 10240 of ${m.zst.raw.length}`),
      )
      expect(existsSync(join(base, 'stereos-harness', 'partial', 'sha256', disk.slice(7)))).toBe(true)
    } finally {
      proxy.fault = undefined
    }
  })

  test('a corrupt zstd disk layer (valid digest, not zstd) is MIXTAPE_INVALID naming the layer', async () => {
    await publishMixtape(registry.url, 'mixtapes/badzstd', 'v1', {
      archs: ['x86_64'],
      layers: (_arch, _format, layers) =>
        layers.map((l, i) => (i === 0 ? { ...l, data: Buffer.concat([l.data.subarray(0, 4), Buffer.alloc(4096, 0x5a)]) } : l)),
    })
    await expectFailure(`${proxy.host}/mixtapes/badzstd:v1`, 'MIXTAPE_INVALID', /layer stereos\.img\.zst \(sha256:[0-9a-f]{64}\) is not a valid zstd stream/)
  })

  test('a zstd stream cut short (the blob itself is intact) is MIXTAPE_INVALID', async () => {
    await publishMixtape(registry.url, 'mixtapes/shortzstd', 'v1', {
      archs: ['x86_64'],
      layers: (_arch, _format, layers) => layers.map((l, i) => (i === 0 ? { ...l, data: l.data.subarray(0, l.data.length - 20) } : l)),
    })
    await expectFailure(`${proxy.host}/mixtapes/shortzstd:v1`, 'MIXTAPE_INVALID', /is not a valid zstd stream/)
  })

  test('files that do not match mixtape.toml checksums are MIXTAPE_INVALID listing each mismatch', async () => {
    const m = syntheticMixtape('x86_64')
    const lying = {
      ...m,
      files: {
        ...m.files,
        'mixtape.toml': Buffer.from(
          m.files['mixtape.toml'].toString().replace(/(\[artifacts\.kernel\.bzimage\]\nfile = "bzImage"\nsha256 = ")[0-9a-f]{8}/, '$1deadbeef'),
        ),
      },
    }
    await publishMixtape(registry.url, 'mixtapes/lying', 'v1', { archs: ['x86_64'], mixtapes: { x86_64: lying } })
    await expectFailure(
      `${proxy.host}/mixtapes/lying:v1`,
      'MIXTAPE_INVALID',
      /do not match the image's mixtape\.toml checksums:\n {2}bzImage: mixtape\.toml \[artifacts\.kernel\.bzimage\] says sha256 deadbeef/,
    )
  })

  test('a title that would escape the mixtape dir is refused before anything is fetched', async () => {
    await publishMixtape(registry.url, 'mixtapes/escape', 'v1', {
      archs: ['x86_64'],
      layers: (_arch, _format, layers) => layers.map((l, i) => (i === 1 ? { ...l, title: '../../evil' } : i === 2 ? { ...l, title: '..' } : l)),
    })
    proxy.reset()
    await expectFailure(`${proxy.host}/mixtapes/escape:v1`, 'MIXTAPE_INVALID', /would be written as "\.\."/)
    expect(proxy.blobGets()).toEqual([])
  })
})
