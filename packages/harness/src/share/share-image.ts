import { randomBytes } from 'node:crypto'
import { existsSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { execa } from 'execa'
import { HarnessError } from '../errors.js'

/** The image's serial on the guest's virtio-blk device: how the guest finds it (/sys/block/vd?/serial). */
export const SHARE_DISK_SERIAL = 'stereos-harness'

const building = new Map<string, Promise<string>>()

/**
 * The harness share as a read-only ext4 image beside its dir (`<dir>.ext4`), built once with
 * `mke2fs -d` (no root, no loop mount). A template can hold a guest with this mounted, where it
 * cannot hold one with a 9p mount (QEMU refuses to migrate then), so the agent can already run
 * in the template; and its pages stay in the template's page cache.
 */
export function ensureShareImage(shareDir: string): Promise<string> {
  let pending = building.get(shareDir)
  if (!pending) {
    pending = build(shareDir)
    building.set(shareDir, pending)
    pending.catch(() => building.delete(shareDir))
  }
  return pending
}

async function build(shareDir: string): Promise<string> {
  const image = `${shareDir}.ext4`
  if (existsSync(image)) return image
  const work = `${image}.tmp-${randomBytes(4).toString('hex')}`
  // ext4's metadata on top of the files, with room to spare: a full image fails to build, not to mount.
  const sizeMiB = Math.ceil((treeBytes(shareDir) * 1.1) / 2 ** 20) + 16
  try {
    const args = [
      '-q',
      '-F',
      '-t',
      'ext4',
      '-L',
      'stereos-harness',
      '-m',
      '0',
      '-O',
      '^has_journal',
      '-E',
      'root_owner=0:0',
      '-d',
      shareDir,
      work,
      `${sizeMiB}M`,
    ]
    const result = await execa('mke2fs', args, { reject: false, timeout: 120_000 })
    if (result.exitCode !== 0) {
      throw new HarnessError('HOST', `mke2fs could not build the harness share image ${image}: ${`${result.stderr}`.trim() || result.message}`, {
        fix: 'install e2fsprogs (apt-get install e2fsprogs); it needs mke2fs 1.43 or later for -d',
      })
    }
    renameSync(work, image)
    return image
  } finally {
    rmSync(work, { force: true })
  }
}

function treeBytes(dir: string): number {
  let total = 0
  for (const name of readdirSync(dir)) {
    const path = join(dir, name)
    const s = statSync(path)
    total += s.isDirectory() ? treeBytes(path) : s.size
  }
  return total
}
