import { realpathSync, statSync } from 'node:fs'
import { execa } from 'execa'
import { HarnessError } from '../errors.js'

export interface DiskImage {
  path: string
  format: 'raw' | 'qcow2'
}

/**
 * A copy-on-write qcow2 overlay over the cached image: the image is never written, and a VM's
 * disk costs only what the guest writes (mb copies raw images in full; STEREOS-FACTS §9.6).
 * The overlay is never smaller than the image, so resources.disk can only grow a disk.
 * The image is checked first (checkDiskImage): boot never follows a backing file it names.
 */
export async function createOverlay(base: DiskImage, overlay: string, sizeBytes: number): Promise<void> {
  const size = Math.max(sizeBytes, await checkDiskImage(base))
  await qemuImg(['create', '-q', '-f', 'qcow2', '-b', base.path, '-F', base.format, overlay, String(size)])
}

/**
 * A lease's disk over a template's (template/store.ts): same size, nothing to check, since the
 * template disk is ours, made by createOverlay over a checked image.
 */
export async function createLeaseDisk(templateDisk: string, overlay: string): Promise<void> {
  await qemuImg(['create', '-q', '-f', 'qcow2', '-b', templateDisk, '-F', 'qcow2', overlay])
}

interface ImageInfo {
  'virtual-size'?: number
  format?: string
  'backing-filename'?: string
  'full-backing-filename'?: string
  'backing-filename-format'?: string
  'format-specific'?: { type?: string; data?: { 'data-file'?: string } }
}

/**
 * Why a template disk (from a cache that may have been shared or restored) must not be used, or
 * undefined: it must be a qcow2 whose one backing file is exactly `base` (after realpath, in
 * `base`'s format) and nothing else in the chain may name another file. Else QEMU would give
 * the guest whatever host file the disk names.
 */
export async function templateDiskDefect(disk: string, base: DiskImage): Promise<string | undefined> {
  let chain: ImageInfo[]
  try {
    chain = JSON.parse(await qemuImg(['info', '--output=json', '--backing-chain', '-U', '-f', 'qcow2', disk])) as ImageInfo[]
  } catch (err) {
    return `qemu-img cannot read its disk: ${(err as Error).message.split('\n')[0]}`
  }
  const [top, below, ...more] = Array.isArray(chain) ? chain : []
  const backing = top?.['full-backing-filename'] ?? top?.['backing-filename']
  if (!top || backing === undefined) return 'its disk has no backing file'
  const expected = realpathOrUndefined(base.path)
  const actual = realpathOrUndefined(backing)
  if (actual === undefined || actual !== expected) return `its disk's backing file is ${backing}, not the mixtape's image ${base.path}`
  if (top['backing-filename-format'] !== base.format)
    return `its disk's backing file is opened as ${top['backing-filename-format'] ?? 'an unnamed format'}, not ${base.format}`
  const dataFile = chain.find((info) => info['format-specific']?.data?.['data-file'] !== undefined)
  if (dataFile) return `its disk chain names an external data file (${dataFile['format-specific']?.data?.['data-file']})`
  if (more.length > 0 || below?.['backing-filename'] !== undefined) return `the mixtape's image ${base.path} itself names a backing file`
  return undefined
}

function realpathOrUndefined(path: string): string | undefined {
  try {
    return realpathSync(path)
  } catch {
    return undefined
  }
}

/**
 * Refuse an image that makes QEMU open other host files: a qcow2 backing file
 * (`qemu-img create -b /host/secret -F raw`) or external data file would hand that file to the
 * guest as its disk. Mixtapes are self-contained images, so neither is ever legitimate. Raw
 * images are opened as raw (`-f raw`), which has no such references. Returns the virtual size.
 * `-U` (no lock) lets a running VM's image be inspected.
 */
export async function checkDiskImage(image: DiskImage): Promise<number> {
  if (image.format === 'raw') return statSync(image.path).size
  const info = JSON.parse(await qemuImg(['info', '--output=json', '-U', '-f', image.format, image.path])) as ImageInfo
  const backing = info['full-backing-filename'] ?? info['backing-filename']
  const dataFile = info['format-specific']?.data?.['data-file']
  const names = [
    backing !== undefined ? `a backing file (${backing})` : undefined,
    dataFile !== undefined ? `an external data file (${dataFile})` : undefined,
  ].filter(Boolean)
  if (names.length) {
    throw new HarnessError(
      'MIXTAPE_INVALID',
      `the disk image ${image.path} names ${names.join(' and ')}: QEMU would give the guest that host file, so it is not used`,
      {
        fix: 'use a self-contained image: pull the mixtape again from a trusted registry, or flatten it (`qemu-img convert -O qcow2 <image> <new image>`)',
      },
    )
  }
  if (typeof info['virtual-size'] !== 'number') {
    throw new HarnessError('MIXTAPE_INVALID', `qemu-img info reports no virtual size for ${image.path}`, {
      fix: 'the image is damaged: pull the mixtape again',
    })
  }
  return info['virtual-size']
}

async function qemuImg(args: string[]): Promise<string> {
  const result = await execa('qemu-img', args, { reject: false })
  if (result.exitCode === 0) return result.stdout
  if (result.code === 'ENOENT') {
    throw new HarnessError('QEMU_NOT_FOUND', 'qemu-img is not installed', { fix: 'install qemu-utils (Debian/Ubuntu: apt-get install qemu-utils)' })
  }
  throw new HarnessError('MIXTAPE_INVALID', `qemu-img ${args[0]} failed: ${result.stderr.trim()}`, {
    fix: 'check that the mixtape image is readable and not corrupt, and that the runtime dir has free space',
  })
}
