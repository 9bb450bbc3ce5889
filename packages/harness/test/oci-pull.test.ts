import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, truncateSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { describe, expect, test } from 'vitest'
import { isHarnessError } from '../src/errors.js'
import { readRecord, RECORD_FILE } from '../src/mixtape/cache.js'
import { plainProgress } from '../src/mixtape/oci/progress.js'
import { findCachedMixtape, pullMixtape, type PullOptions } from '../src/mixtape/pull.js'
import { resolveMixtape } from '../src/mixtape/resolve.js'
import {
  mixtapeLayers,
  publishMixtape,
  pushImage,
  pushIndex,
  sha256,
  freePort,
  syntheticMixtape,
  type Proxy as RegistryProxy,
  type Registry,
  tempDir,
  registryWithProxy,
} from './support/registry.js'

const FAST_RETRY = { attempts: 3, baseMs: 20, maxMs: 100 }

let registry: Registry
let proxy: RegistryProxy
registryWithProxy((r, p) => {
  registry = r
  proxy = p
})

function freshBase(): string {
  return tempDir('sh-mb-')
}

async function pull(ref: string, base: string, options: PullOptions = {}) {
  const lines: string[] = []
  const result = await pullMixtape(ref, { base, retry: FAST_RETRY, progress: plainProgress((line) => lines.push(line)), ...options })
  return { ...result, lines }
}

describe('pull from a real registry (docker-registry 2.8 on 127.0.0.1)', () => {
  test("a multi-arch index lands in mb's layout: raw picked for the arch, zstd unpacked, titles as names, mixtape.toml verified", async () => {
    const published = await publishMixtape(registry.url, 'mixtapes/coder', 'latest')
    const base = freshBase()
    for (const arch of ['x86_64', 'aarch64'] as const) {
      proxy.reset()
      const result = await pull(`${proxy.host}/mixtapes/coder:latest`, base, { arch, force: true })
      expect(result.dir).toBe(join(base, 'mixtapes', 'coder', 'latest'))
      expect(result.tier).toBe(1)
      expect(result.format).toBe('raw')
      expect(result.digest).toBe(published.index)
      expect(result.manifest).toBe(published.manifests[`${arch}/raw`])
      expect(result.platform).toBe(arch === 'x86_64' ? 'linux/amd64' : 'linux/arm64')
      expect(readdirSync(result.dir).sort()).toEqual([RECORD_FILE, 'bzImage', 'cmdline', 'init', 'initrd', 'mixtape.toml', 'stereos.img'])
      const m = published.mixtapes[arch]
      for (const file of ['stereos.img', 'bzImage', 'initrd', 'cmdline', 'init', 'mixtape.toml'] as const) {
        expect(readFileSync(join(result.dir, file)).equals(m.files[file]), file).toBe(true)
      }
      expect(result.verified.sort()).toEqual(['bzImage', 'cmdline', 'init', 'initrd', 'stereos.img'])
      expect(statSync(result.dir).mode & 0o777).toBe(0o755)
      // The qcow2 sibling is never fetched: only its manifest is probed, and not even that (tier 1 stops first).
      expect(proxy.requests.some((r) => r.path.endsWith(published.manifests[`${arch}/qcow2`]!))).toBe(false)
    }
    // resolveMixtape reads it like any mb-pulled dir.
    const mixtape = await resolveMixtape(`${proxy.host}/mixtapes/coder:latest`, { arch: 'aarch64', log: () => undefined, ...{} }).catch((err: unknown) => err)
    expect(mixtape).toMatchObject({ arch: 'aarch64', disk: { format: 'raw' } })
  })

  test('a cached image resolves with no network request at all (counted at the server)', async () => {
    const published = await publishMixtape(registry.url, 'mixtapes/cached', 'v1')
    const base = freshBase()
    const ref = `${proxy.host}/mixtapes/cached:v1`
    await pull(ref, base, { arch: 'x86_64' })
    proxy.reset()
    process.env.MB_CONFIG_DIR = base
    try {
      const mixtape = await resolveMixtape(ref, { arch: 'x86_64', log: () => undefined })
      const dir = join(base, 'mixtapes', 'cached', 'v1')
      expect(mixtape.dir).toBe(dir)
      // Direct kernel boot from the pulled files, which are the published ones.
      expect(mixtape.kernel).toEqual({ kernel: join(dir, 'bzImage'), initrd: join(dir, 'initrd'), cmdline: join(dir, 'cmdline') })
      const files = published.mixtapes.x86_64.files
      expect(readFileSync(mixtape.kernel!.kernel).equals(files.bzImage)).toBe(true)
      expect(readFileSync(mixtape.kernel!.initrd).equals(files.initrd)).toBe(true)
      expect(readFileSync(mixtape.kernel!.cmdline, 'utf8')).toBe(files.cmdline.toString())
    } finally {
      delete process.env.MB_CONFIG_DIR
    }
    expect(proxy.requests).toEqual([])
    expect(findCachedMixtape(ref, { base, arch: 'x86_64' })).toBe(join(base, 'mixtapes', 'cached', 'v1'))
  })

  test('pull of an unchanged tag asks for the manifest only; a moved tag is replaced atomically', async () => {
    const base = freshBase()
    const ref = `${proxy.host}/mixtapes/moving:stable`
    const first = await publishMixtape(registry.url, 'mixtapes/moving', 'stable', { archs: ['x86_64'] })
    await pull(ref, base, { arch: 'x86_64' })
    proxy.reset()
    const again = await pull(ref, base, { arch: 'x86_64' })
    expect(again.upToDate).toBe(true)
    expect(proxy.requests.map((r) => r.path)).toEqual(['/v2/mixtapes/moving/manifests/stable'])

    const second = await publishMixtape(registry.url, 'mixtapes/moving', 'stable', { archs: ['x86_64'] })
    expect(second.index).not.toBe(first.index)
    const moved = await pull(ref, base, { arch: 'x86_64' })
    expect(moved.upToDate).toBe(false)
    expect(readFileSync(join(moved.dir, 'stereos.img')).equals(second.mixtapes.x86_64.files['stereos.img'])).toBe(true)
    expect(readRecord(moved.dir)?.digest).toBe(second.index)
    expect(readdirSync(join(base, 'stereos-harness', 'tmp'))).toEqual([])
  })

  test('tags that share blobs download them once (content-addressed store)', async () => {
    const m = syntheticMixtape('x86_64')
    await publishMixtape(registry.url, 'mixtapes/shared', 'a', { archs: ['x86_64'], mixtapes: { x86_64: m } })
    // Tag b: the same files but a different cmdline.
    const b = { ...m, files: { ...m.files, cmdline: Buffer.from('console=ttyS0 other') } }
    const layers = mixtapeLayers(b, 'raw').filter((l) => l.title !== 'mixtape.toml')
    const image = await pushImage(registry.url, 'mixtapes/shared', layers)
    await pushIndex(registry.url, 'mixtapes/shared', 'b', [{ ...image, platform: { os: 'linux', architecture: 'amd64' } }])

    const base = freshBase()
    proxy.reset()
    await pull(`${proxy.host}/mixtapes/shared:a`, base, { arch: 'x86_64' })
    expect(proxy.blobGets()).toHaveLength(6)
    proxy.reset()
    const second = await pull(`${proxy.host}/mixtapes/shared:b`, base, { arch: 'x86_64' })
    expect(proxy.blobGets().map((r) => r.path)).toEqual([`/v2/mixtapes/shared/blobs/${sha256(b.files.cmdline)}`])
    expect(readFileSync(join(second.dir, 'cmdline'), 'utf8')).toBe('console=ttyS0 other')
    expect(second.lines.some((l) => l.includes('no mixtape.toml'))).toBe(true)
  })

  test('an interrupted blob download resumes with Range, in the same pull and in the next one', async () => {
    const m = syntheticMixtape('x86_64', { diskBytes: 256 * 1024 })
    await publishMixtape(registry.url, 'mixtapes/resume', 'v1', { archs: ['x86_64'], formats: ['raw'], mixtapes: { x86_64: m } })
    const diskBlob = sha256(m.zst.raw)
    const base = freshBase()
    // 1. Within one pull: the first GET is cut after 100 KiB; the retry asks for the rest.
    proxy.reset()
    proxy.fault = (req, nth) => (req.path.endsWith(diskBlob) && nth === 1 ? { truncateAt: 100 * 1024 } : undefined)
    const result = await pull(`${proxy.host}/mixtapes/resume:v1`, base, { arch: 'x86_64' })
    proxy.fault = undefined
    const gets = proxy.blobGets().filter((r) => r.path.endsWith(diskBlob))
    expect(gets.map((r) => r.range)).toEqual([undefined, 'bytes=102400-'])
    expect(readFileSync(join(result.dir, 'stereos.img')).equals(m.files['stereos.img'])).toBe(true)

    // 2. Across processes: a partial file left by a pull that died is continued, not restarted.
    const other = freshBase()
    const partialDir = join(other, 'stereos-harness', 'partial', 'sha256')
    mkdirSync(partialDir, { recursive: true })
    writeFileSync(join(partialDir, diskBlob.slice(7)), m.zst.raw.subarray(0, 50_000))
    proxy.reset()
    const resumed = await pull(`${proxy.host}/mixtapes/resume:v1`, other, { arch: 'x86_64' })
    expect(proxy.blobGets().find((r) => r.path.endsWith(diskBlob))?.range).toBe('bytes=50000-')
    expect(resumed.lines.some((l) => l.includes('resuming at'))).toBe(true)
    expect(readFileSync(join(resumed.dir, 'stereos.img')).equals(m.files['stereos.img'])).toBe(true)
    expect(existsSync(join(partialDir, diskBlob.slice(7)))).toBe(false)
  })

  test('a damaged blob-store entry or partial download is detected and fetched again, not trusted', async () => {
    const m = syntheticMixtape('x86_64')
    await publishMixtape(registry.url, 'mixtapes/heal', 'a', { archs: ['x86_64'], mixtapes: { x86_64: m } })
    await publishMixtape(registry.url, 'mixtapes/heal', 'b', { archs: ['x86_64'], mixtapes: { x86_64: m } })
    const base = freshBase()
    await pull(`${proxy.host}/mixtapes/heal:a`, base, { arch: 'x86_64' })
    // Someone writes into the store (same size, other bytes).
    const kernel = sha256(m.files.bzImage)
    const stored = join(base, 'stereos-harness', 'blobs', 'sha256', kernel.slice(7))
    chmodSync(stored, 0o644)
    writeFileSync(stored, Buffer.alloc(m.files.bzImage.length, 1))
    proxy.reset()
    const b = await pull(`${proxy.host}/mixtapes/heal:b`, base, { arch: 'x86_64' })
    expect(b.lines).toContain(`  warning: the stored copy of ${kernel} was damaged (removed); downloading it again`)
    expect(proxy.blobGets().map((r) => r.path)).toEqual([`/v2/mixtapes/heal/blobs/${kernel}`])
    expect(readFileSync(join(b.dir, 'bzImage')).equals(m.files.bzImage)).toBe(true)

    // A partial download whose bytes are wrong: the resumed blob fails its digest, and is fetched whole.
    const other = freshBase()
    const partial = join(other, 'stereos-harness', 'partial', 'sha256', kernel.slice(7))
    mkdirSync(dirname(partial), { recursive: true })
    writeFileSync(partial, Buffer.alloc(1000, 9))
    proxy.reset()
    const c = await pull(`${proxy.host}/mixtapes/heal:a`, other, { arch: 'x86_64' })
    expect(c.lines.some((l) => l.includes(`a resumed download of ${kernel} did not verify`))).toBe(true)
    expect(
      proxy
        .blobGets()
        .filter((r) => r.path.endsWith(kernel))
        .map((r) => r.range),
    ).toEqual(['bytes=1000-', undefined])
    expect(readFileSync(join(c.dir, 'bzImage')).equals(m.files.bzImage)).toBe(true)
  })

  test('a cached copy with a file missing or cut short is not a cache hit: it is pulled again', async () => {
    await publishMixtape(registry.url, 'mixtapes/damaged', 'v1', { archs: ['x86_64'] })
    const base = freshBase()
    const ref = `${proxy.host}/mixtapes/damaged:v1`
    const first = await pull(ref, base, { arch: 'x86_64' })
    truncateSync(join(first.dir, 'stereos.img'), 100)
    expect(findCachedMixtape(ref, { base, arch: 'x86_64' })).toBeUndefined()
    const again = await pull(ref, base, { arch: 'x86_64' })
    expect(again.upToDate).toBe(false)
    expect(statSync(join(again.dir, 'stereos.img')).size).toBe(first.files['stereos.img']!.size)
  })

  test('an unknown tag or repository is MIXTAPE_NOT_FOUND, and leaves nothing behind', async () => {
    const base = freshBase()
    for (const ref of [`${proxy.host}/mixtapes/coder:no-such-tag`, `${proxy.host}/mixtapes/nothing-here:latest`]) {
      const err = await pull(ref, base, { arch: 'x86_64' }).catch((e: unknown) => e)
      expect(isHarnessError(err, 'MIXTAPE_NOT_FOUND'), String(err)).toBe(true)
      expect((err as Error).message).toMatch(/has no manifest .* \(404\)/)
    }
    expect(existsSync(join(base, 'mixtapes'))).toBe(false)
  })

  test('5xx answers are retried with backoff; when they persist the error names the status', async () => {
    await publishMixtape(registry.url, 'mixtapes/flaky', 'v1', { archs: ['x86_64'] })
    const base = freshBase()
    proxy.reset()
    proxy.fault = (req, nth) =>
      req.path.endsWith('/manifests/v1') && nth <= 2 ? { status: 503 } : req.path.includes('/blobs/') && nth === 1 ? { status: 500 } : undefined
    const result = await pull(`${proxy.host}/mixtapes/flaky:v1`, base, { arch: 'x86_64' })
    expect(result.upToDate).toBe(false)
    expect(proxy.requests.filter((r) => r.path.endsWith('/manifests/v1'))).toHaveLength(3)
    expect(result.lines.filter((l) => l.includes('retry'))).toHaveLength(2 + 6)

    proxy.fault = (req) => (req.path.endsWith('/manifests/v1') ? { status: 502, body: 'bad gateway' } : undefined)
    const err = await pull(`${proxy.host}/mixtapes/flaky:v1`, freshBase(), { arch: 'x86_64' }).catch((e: unknown) => e)
    proxy.fault = undefined
    expect(isHarnessError(err, 'REGISTRY')).toBe(true)
    expect((err as Error).message).toMatch(/failed after 3 attempt\(s\): the registry answered 502 .*bad gateway/)
    expect((err as Error).message).toContain('Fix: ')
  })

  test('a registry that is not listening is a REGISTRY error naming the connection failure', async () => {
    const port = await freePort()
    const err = await pull(`127.0.0.1:${port}/mixtapes/coder:latest`, freshBase(), { arch: 'x86_64' }).catch((e: unknown) => e)
    expect(isHarnessError(err, 'REGISTRY')).toBe(true)
    expect((err as Error).message).toMatch(/ECONNREFUSED/)
  })
})
