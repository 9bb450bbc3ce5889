import { spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { zstdCompressSync } from 'node:zlib'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { isHarnessError } from '../src/errors.js'
import { cacheLayout, tagDir } from '../src/mixtape/cache.js'
import { MAX_IMAGE_FILE_BYTES, planLayers } from '../src/mixtape/oci/install.js'
import { pullMixtape } from '../src/mixtape/pull.js'
import { checkDiskImage, createOverlay, templateDiskDefect } from '../src/vmm/disk.js'
import { publishMixtape, qcow2Of, removeTempDirs, startRegistry, syntheticMixtape, tempDir, type Registry } from './support/registry.js'

/**
 * Issue 14 items 3 and 8: images that attack the host. A qcow2 that names a host file as its
 * backing file (or external data file) would hand that file to the guest; a zstd disk layer that
 * expands without bound would fill the host disk before mixtape.toml's size was checked.
 */

const temps: string[] = []
afterAll(() => {
  for (const dir of temps) rmSync(dir, { recursive: true, force: true })
  removeTempDirs()
})

function temp(): string {
  const dir = mkdtempSync(join(tmpdir(), 'sh-hostile-'))
  temps.push(dir)
  return dir
}

/** A host file the attacker wants the guest to read. */
function hostSecret(): string {
  const path = join(temp(), 'secret')
  writeFileSync(path, 'host secret\n'.repeat(64))
  return path
}

function qemuImg(args: string[]): void {
  const run = spawnSync('qemu-img', args, { encoding: 'utf8' })
  if (run.status !== 0) throw new Error(`qemu-img ${args.join(' ')}: ${run.stderr}`)
}

/** `qemu-img create -f qcow2 -b <host file> -F raw`: the attack image. */
function backedQcow2(backing: string): string {
  const path = join(temp(), 'evil.qcow2')
  qemuImg(['create', '-q', '-f', 'qcow2', '-b', backing, '-F', 'raw', path, '1M'])
  return path
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => {
      throw new Error('expected a refusal')
    },
    (err: unknown) => err,
  )
}

describe('qcow2 with a backing file or external data file: refused at boot (createOverlay)', () => {
  test('a backing file naming a host file is refused before any overlay exists', async () => {
    const secret = hostSecret()
    const image = backedQcow2(secret)
    const overlay = join(temp(), 'disk.qcow2')
    const err = await rejection(createOverlay({ path: image, format: 'qcow2' }, overlay, 1 << 20))
    expect(isHarnessError(err, 'MIXTAPE_INVALID')).toBe(true)
    expect((err as Error).message).toContain(`names a backing file (${secret})`)
    expect((err as Error).message).toContain('qemu-img convert')
    expect(existsSync(overlay)).toBe(false)
  })

  test('a backing file that does not exist (yet) is refused the same way', async () => {
    const path = join(temp(), 'dangling.qcow2')
    qemuImg(['create', '-q', '-u', '-f', 'qcow2', '-b', '/nonexistent/host/file', '-F', 'raw', path, '1M'])
    const err = await rejection(checkDiskImage({ path, format: 'qcow2' }))
    expect((err as Error).message).toContain('names a backing file (/nonexistent/host/file)')
  })

  test('an external data file is refused', async () => {
    const dir = temp()
    const data = hostSecret()
    const path = join(dir, 'datafile.qcow2')
    qemuImg(['create', '-q', '-f', 'qcow2', '-o', `data_file=${join(dir, 'data.raw')}`, path, '1M'])
    // Point it at the host secret afterwards, as an attacker's image would (no need to write it).
    qemuImg(['amend', '-q', '-f', 'qcow2', '-o', `data_file=${data}`, path])
    const err = await rejection(checkDiskImage({ path, format: 'qcow2' }))
    expect(isHarnessError(err, 'MIXTAPE_INVALID')).toBe(true)
    expect((err as Error).message).toContain(`an external data file (${data})`)
  })

  test('a self-contained qcow2 passes and reports its virtual size; raw images are not opened as qcow2', async () => {
    const path = join(temp(), 'plain.qcow2')
    writeFileSync(path, qcow2Of(Buffer.alloc(4096, 1)))
    expect(await checkDiskImage({ path, format: 'qcow2' })).toBe(4096)
    // A raw image whose bytes are a backed qcow2 is still raw: QEMU gets -F raw, no backing file is opened.
    const rawPath = backedQcow2(hostSecret())
    expect(await checkDiskImage({ path: rawPath, format: 'raw' })).toBe(readFileSync(rawPath).length)
  })
})

describe('a template disk from a shared or restored cache must be a qcow2 over exactly the mixtape image (#19 bounds)', () => {
  function base(): { path: string; format: 'raw' } {
    const path = join(temp(), 'stereos.img')
    writeFileSync(path, Buffer.alloc(1 << 20))
    return { path, format: 'raw' }
  }
  function over(backing: string, format = 'raw'): string {
    const path = join(temp(), 'disk.qcow2')
    qemuImg(['create', '-q', '-f', 'qcow2', '-b', backing, '-F', format, path, '1M'])
    return path
  }

  test('the disk a template build makes (createOverlay) passes, also when the image is reached through a link', async () => {
    const image = base()
    const disk = join(temp(), 'disk.qcow2')
    await createOverlay(image, disk, 1 << 20)
    expect(await templateDiskDefect(disk, image)).toBeUndefined()
    const link = join(temp(), 'link.img')
    symlinkSync(image.path, link)
    expect(await templateDiskDefect(over(link), image)).toBeUndefined()
  })

  test('a disk over a host file, or over nothing, is refused', async () => {
    const secret = hostSecret()
    const image = base()
    expect(await templateDiskDefect(over(secret), image)).toBe(`its disk's backing file is ${secret}, not the mixtape's image ${image.path}`)
    const plain = join(temp(), 'plain.qcow2')
    writeFileSync(plain, qcow2Of(Buffer.alloc(4096)))
    expect(await templateDiskDefect(plain, image)).toBe('its disk has no backing file')
    const notQcow2 = join(temp(), 'junk.qcow2')
    writeFileSync(notQcow2, 'not an image')
    expect(await templateDiskDefect(notQcow2, image)).toMatch(/^qemu-img cannot read its disk: /)
  })

  test('the right file opened as another format, or a chain that goes on past the image, is refused', async () => {
    const image = base()
    const asQcow2 = over(over(image.path), 'qcow2')
    const middle = JSON.parse(spawnSync('qemu-img', ['info', '--output=json', asQcow2], { encoding: 'utf8' }).stdout)['backing-filename'] as string
    expect(await templateDiskDefect(asQcow2, { path: middle, format: 'qcow2' })).toBe(`the mixtape's image ${middle} itself names a backing file`)
    // A qcow2 image read as raw: the guest would see its qcow2 bytes (or, the other way round, the image's own references).
    const qcow2Image = join(temp(), 'stereos.qcow2')
    writeFileSync(qcow2Image, qcow2Of(Buffer.alloc(4096)))
    expect(await templateDiskDefect(over(qcow2Image, 'raw'), { path: qcow2Image, format: 'qcow2' })).toBe("its disk's backing file is opened as raw, not qcow2")
  })
})

describe('image-declared sizes are capped by the host (#19 bounds)', () => {
  test('a layer descriptor larger than the host accepts is refused when the manifest is planned', () => {
    const layer = (size: number) => ({
      mediaType: 'application/vnd.papercompute.stereos.disk.v1+raw+zstd',
      digest: `sha256:${'a'.repeat(64)}`,
      size,
      annotations: { 'org.opencontainers.image.title': 'stereos.img.zst' },
    })
    expect(planLayers({ layers: [layer(MAX_IMAGE_FILE_BYTES)] }, new Set())).toHaveLength(1)
    let err: unknown
    try {
      planLayers({ layers: [layer(MAX_IMAGE_FILE_BYTES + 1)] }, new Set())
    } catch (e) {
      err = e
    }
    expect(isHarnessError(err, 'MIXTAPE_INVALID')).toBe(true)
    expect((err as Error).message).toContain(`its manifest declares layer stereos.img.zst (sha256:${'a'.repeat(64)}) as ${MAX_IMAGE_FILE_BYTES + 1} bytes`)
  })
})

describe('hostile images from a registry (real docker-registry on 127.0.0.1)', () => {
  let registry: Registry
  beforeAll(async () => {
    registry = await startRegistry()
  })
  afterAll(async () => {
    await registry?.stop()
  })

  /** The pull fails with `code`, leaves no tag dir and nothing in the cache's tmp. */
  async function pullRefused(repo: string, arch: 'x86_64' | 'aarch64' = 'x86_64'): Promise<Error> {
    const base = tempDir('sh-mb-')
    const err = await rejection(pullMixtape(`${registry.host}/${repo}`, { base, arch }))
    expect(isHarnessError(err, 'MIXTAPE_INVALID'), String(err)).toBe(true)
    const layout = cacheLayout(base)
    const [name, tag] = repo.slice(repo.lastIndexOf('/') + 1).split(':') as [string, string]
    expect(existsSync(tagDir(layout, name, tag))).toBe(false)
    expect(existsSync(layout.tmp) ? readdirSync(layout.tmp) : []).toEqual([])
    return err as Error
  }

  test('a qcow2 mixtape whose disk has a backing file (checksums all correct) is refused at pull', async () => {
    const secret = hostSecret()
    const evil = readFileSync(backedQcow2(secret))
    const m = syntheticMixtape('aarch64', { qcow2: evil })
    await publishMixtape(registry.url, 'mixtapes/backed', 'v1', { archs: ['aarch64'], formats: ['qcow2'], mixtapes: { aarch64: m } })
    const err = await pullRefused('mixtapes/backed:v1', 'aarch64')
    expect(err.message).toContain(`names a backing file (${secret})`)
  })

  test('a zstd disk layer that expands past the size mixtape.toml declares stops there (a 4 GiB bomb in a few KiB)', async () => {
    const m = syntheticMixtape('x86_64')
    const declared = m.files['stereos.img'].length
    // zstd frames concatenate: 64 copies of one 64 MiB frame of zeros unpack to 4 GiB.
    const frame = zstdCompressSync(Buffer.alloc(64 * 1024 * 1024))
    const bomb = Buffer.concat(Array.from({ length: 64 }, () => frame))
    await publishMixtape(registry.url, 'mixtapes/bomb', 'v1', {
      archs: ['x86_64'],
      formats: ['raw'],
      mixtapes: { x86_64: m },
      // mb's layer order: the disk first, mixtape.toml last.
      layers: (_arch, _format, layers) => layers.map((l, i) => (i === 0 ? { ...l, data: bomb } : l)),
    })
    const err = await pullRefused('mixtapes/bomb:v1')
    expect(err.message).toContain(`unpacks to more than the ${declared} bytes its mixtape.toml declares for stereos.img: unpacking stopped there`)
    expect(err.message).toContain('decompression bomb')
  })

  test("a mixtape.toml that declares an enormous disk is refused before unpacking: the bound is the host's, not the image's", async () => {
    const m = syntheticMixtape('x86_64')
    const huge = Number.MAX_SAFE_INTEGER
    // The [artifacts.raw] entry's size, and nothing else, becomes 2^53 - 1 bytes.
    const toml = m.files['mixtape.toml'].toString().replace(`size = ${m.files['stereos.img'].length}\n`, `size = ${huge}\n`)
    expect(toml).toContain(`size = ${huge}`)
    m.files['mixtape.toml'] = Buffer.from(toml)
    await publishMixtape(registry.url, 'mixtapes/huge', 'v1', { archs: ['x86_64'], formats: ['raw'], mixtapes: { x86_64: m } })
    const err = await pullRefused('mixtapes/huge:v1')
    expect(err.message).toContain(`its mixtape.toml declares stereos.img (unpacked from stereos.img.zst) as ${huge} bytes`)
    expect(err.message).toContain(`more than the ${MAX_IMAGE_FILE_BYTES / 1024 ** 3} GiB the harness accepts`)
    expect((err as { fix?: string }).fix).toContain('Pull another tag')
  })

  test('an image that declares its disk exactly still pulls (the bound is the declared size, not less)', async () => {
    const m = syntheticMixtape('x86_64')
    await publishMixtape(registry.url, 'mixtapes/exact', 'v1', { archs: ['x86_64'], mixtapes: { x86_64: m } })
    const result = await pullMixtape(`${registry.host}/mixtapes/exact:v1`, { base: tempDir('sh-mb-'), arch: 'x86_64' })
    expect(readFileSync(join(result.dir, 'stereos.img')).equals(m.files['stereos.img'])).toBe(true)
  })
})
