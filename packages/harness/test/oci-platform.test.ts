import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { isHarnessError } from '../src/errors.js'
import { readMixtapeDir } from '../src/mixtape/local.js'
import type { Descriptor } from '../src/mixtape/oci/media-types.js'
import { selectIndexManifest } from '../src/mixtape/oci/platform.js'
import { plainProgress } from '../src/mixtape/oci/progress.js'
import { pullMixtape } from '../src/mixtape/pull.js'
import {
  mixtapeLayers,
  publishMixtape,
  pushImage,
  pushIndex,
  pushManifest,
  startRegistry,
  syntheticMixtape,
  OCI_MANIFEST,
  type Registry,
  removeTempDirs,
  tempDir,
} from './support/registry.js'

afterAll(removeTempDirs)

const d = (n: number, platform?: [string, string]): Descriptor => ({
  mediaType: 'application/vnd.oci.image.manifest.v1+json',
  digest: `sha256:${String(n).padStart(64, '0')}`,
  size: 1,
  ...(platform ? { platform: { os: platform[0], architecture: platform[1] } } : {}),
})

describe("platform pick: mb's four tiers (selectIndexManifest)", () => {
  const amd64Raw = d(1, ['linux', 'amd64'])
  const amd64Qcow = d(2, ['linux', 'amd64'])
  const arm64Raw = d(3, ['linux', 'arm64'])
  const arm64Qcow = d(4, ['linux', 'arm64'])
  const raw = new Set([amd64Raw.digest, arm64Raw.digest, d(5).digest])
  const probe = async (x: Descriptor) => raw.has(x.digest)

  test.each([
    ['amd64, raw first', [amd64Raw, amd64Qcow, arm64Raw, arm64Qcow], 'amd64', amd64Raw, 1],
    ['arm64, raw first', [amd64Raw, amd64Qcow, arm64Raw, arm64Qcow], 'arm64', arm64Raw, 1],
    ['arm64, qcow2 listed before raw', [arm64Qcow, arm64Raw, amd64Raw], 'arm64', arm64Raw, 1],
    ['only qcow2 for the platform → tier 2', [amd64Raw, arm64Qcow], 'arm64', arm64Qcow, 2],
    ['no platform anywhere, raw second → tier 3', [d(6), d(5)], 'amd64', d(5), 3],
    ['other platforms only, one raw → tier 3', [arm64Qcow, arm64Raw], 'amd64', arm64Raw, 3],
    ['no platform and no raw → tier 4, the first', [d(7), d(8)], 'amd64', d(7), 4],
  ] as const)('%s', async (_name, manifests, arch, expected, tier) => {
    const pick = await selectIndexManifest([...manifests], 'linux', arch, probe)
    expect(pick.descriptor).toEqual(expected)
    expect(pick.tier).toBe(tier)
    expect(pick.warning === undefined).toBe(tier === 1)
  })

  test('a probe that fails counts as "no raw"; the pass stops at the first tier-1 hit', async () => {
    const probed: string[] = []
    const pick = await selectIndexManifest([amd64Qcow, amd64Raw, arm64Raw], 'linux', 'amd64', async (x) => {
      probed.push(x.digest)
      if (x === amd64Qcow) throw new Error('manifest unknown')
      return raw.has(x.digest)
    })
    expect(pick).toMatchObject({ descriptor: amd64Raw, tier: 1 })
    expect(probed).toEqual([amd64Qcow.digest, amd64Raw.digest])
  })

  test('an empty index is MIXTAPE_INVALID', async () => {
    const err = await selectIndexManifest([], 'linux', 'amd64', probe).catch((e: unknown) => e)
    expect(isHarnessError(err, 'MIXTAPE_INVALID')).toBe(true)
  })
})

describe('platform pick against a real registry', () => {
  let registry: Registry
  beforeAll(async () => {
    registry = await startRegistry()
  })
  afterAll(async () => {
    await registry?.stop()
  })

  const pull = async (ref: string, arch: 'x86_64' | 'aarch64') => {
    const lines: string[] = []
    const result = await pullMixtape(`${registry.host}/${ref}`, { base: tempDir('sh-mb-'), arch, progress: plainProgress((l) => lines.push(l)) })
    return { ...result, lines, mixtape: readMixtapeDir(ref, result.dir) }
  }

  test('each guest arch gets its own raw image from the multi-arch index', async () => {
    const published = await publishMixtape(registry.url, 'mixtapes/multi', 'latest')
    for (const arch of ['x86_64', 'aarch64'] as const) {
      const result = await pull('mixtapes/multi:latest', arch)
      expect(result.manifest).toBe(published.manifests[`${arch}/raw`])
      expect(result.mixtape).toMatchObject({ arch, disk: { format: 'raw', path: join(result.dir, 'stereos.img') } })
      expect(result.lines.some((l) => l.includes('warning'))).toBe(false)
    }
  })

  test('tier 2: no raw for the arch → its qcow2, with a warning, and the harness boots it as qcow2', async () => {
    const x86 = syntheticMixtape('x86_64')
    const arm = syntheticMixtape('aarch64')
    const rawX86 = await pushImage(registry.url, 'mixtapes/tier2', mixtapeLayers(x86, 'raw'))
    const qcowArm = await pushImage(registry.url, 'mixtapes/tier2', mixtapeLayers(arm, 'qcow2'))
    await pushIndex(registry.url, 'mixtapes/tier2', 'v1', [
      { ...rawX86, platform: { os: 'linux', architecture: 'amd64' } },
      { ...qcowArm, platform: { os: 'linux', architecture: 'arm64' } },
    ])
    const result = await pull('mixtapes/tier2:v1', 'aarch64')
    expect(result).toMatchObject({ tier: 2, format: 'qcow2', manifest: qcowArm.digest })
    expect(result.mixtape.disk).toEqual({ path: join(result.dir, 'stereos.qcow2'), format: 'qcow2' })
    expect(existsSync(join(result.dir, 'stereos.img'))).toBe(false)
    expect(result.lines).toContain('  warning: no raw format for linux/arm64 in the index; using the linux/arm64 manifest in another format')
  })

  test('tier 3: an index without platforms → the first raw entry; tier 4: no raw → the first entry', async () => {
    const m = syntheticMixtape('x86_64')
    const qcow = await pushImage(registry.url, 'mixtapes/noplat', mixtapeLayers(m, 'qcow2'))
    const raw = await pushImage(registry.url, 'mixtapes/noplat', mixtapeLayers(m, 'raw'))
    await pushIndex(registry.url, 'mixtapes/noplat', 'both', [qcow, raw])
    await pushIndex(registry.url, 'mixtapes/noplat', 'qcow-only', [qcow])
    const t3 = await pull('mixtapes/noplat:both', 'x86_64')
    expect(t3).toMatchObject({ tier: 3, format: 'raw', manifest: raw.digest })
    expect(t3.lines.some((l) => l.includes('may not run on this host'))).toBe(true)
    const t4 = await pull('mixtapes/noplat:qcow-only', 'x86_64')
    expect(t4).toMatchObject({ tier: 4, format: 'qcow2', manifest: qcow.digest })
  })

  test('a tag that names an image manifest directly (no index) is installed as is', async () => {
    const m = syntheticMixtape('x86_64')
    const image = await pushImage(registry.url, 'mixtapes/single', mixtapeLayers(m, 'raw'))
    const body = await fetch(`${registry.url}/v2/mixtapes/single/manifests/${image.digest}`, { headers: { accept: OCI_MANIFEST } }).then((r) => r.text())
    await pushManifest(registry.url, 'mixtapes/single', 'v1', OCI_MANIFEST, body)
    const result = await pull('mixtapes/single:v1', 'aarch64')
    expect(result).toMatchObject({ tier: 0, format: 'raw', digest: image.digest, manifest: image.digest })
  })
})
