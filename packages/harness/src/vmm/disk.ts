import { statSync } from 'node:fs'
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
 */
export async function createOverlay(base: DiskImage, overlay: string, sizeBytes: number): Promise<void> {
  const size = Math.max(sizeBytes, await virtualSize(base))
  await qemuImg(['create', '-q', '-f', 'qcow2', '-b', base.path, '-F', base.format, overlay, String(size)])
}

async function virtualSize(image: DiskImage): Promise<number> {
  if (image.format === 'raw') return statSync(image.path).size
  const info = JSON.parse(await qemuImg(['info', '--output=json', image.path])) as { 'virtual-size': number }
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
