import { constants } from 'node:fs'
import { chmod, chown, copyFile, lchown, lstat, mkdir, open, readdir, readlink, rm, symlink, unlink } from 'node:fs/promises'
import { isAbsolute, join, normalize, sep } from 'node:path'
import type { Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { HarnessError } from '../errors.js'
import type { FileKind, GuestStat, ListEntry, PlaceEntry } from '../wire/messages.js'
import type { Identity } from './identity.js'
import type { BlobStore } from './store.js'

export function absolute(path: string, what = 'path'): string {
  if (!isAbsolute(path)) throw new HarnessError('AGENT', `${what} must be absolute in the guest, got ${JSON.stringify(path)}`)
  return normalize(path)
}

/** `root/rel`, refusing entries that would land outside root. */
function inside(root: string, rel: string): string {
  const clean = normalize(rel)
  if (isAbsolute(clean) || clean === '..' || clean.startsWith(`..${sep}`)) {
    throw new HarnessError('AGENT', `entry ${JSON.stringify(rel)} is not inside ${root}`)
  }
  return join(root, clean)
}

async function own(path: string, owner: Identity | undefined): Promise<void> {
  if (owner) await chown(path, owner.uid, owner.gid)
}

async function lchownIf(path: string, owner: Identity | undefined): Promise<void> {
  if (owner) await lchown(path, owner.uid, owner.gid)
}

/** mkdir -p, owning every directory it creates. */
export async function makeDir(path: string, mode: number | undefined, owner: Identity | undefined): Promise<void> {
  const first = await mkdir(path, { recursive: true, ...(mode === undefined ? {} : { mode }) })
  if (first && owner) {
    for (let dir = path; dir.length >= first.length; dir = join(dir, '..')) {
      await own(dir, owner)
      if (dir === first) break
    }
  }
  if (mode !== undefined) await chmod(path, mode)
}

/** Materialise a tree from the blob store: directories, then files (copied, so the store stays intact), then links. */
export async function place(store: BlobStore, root: string, entries: PlaceEntry[], owner: Identity | undefined): Promise<void> {
  const base = absolute(root, 'root')
  await makeDir(base, undefined, owner)
  const order: Record<FileKind, number> = { dir: 0, file: 1, symlink: 2 }
  for (const entry of [...entries].sort((a, b) => order[a.kind] - order[b.kind])) {
    const target = inside(base, entry.path)
    if (entry.kind === 'dir') {
      await makeDir(target, entry.mode & 0o7777, owner)
    } else if (entry.kind === 'file') {
      if (!entry.hash) throw new HarnessError('AGENT', `file entry ${entry.path} has no hash`)
      const blob = store.path(entry.hash)
      await rm(target, { force: true })
      await copyFile(blob, target, constants.COPYFILE_FICLONE).catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT' && !store.has(entry.hash as string)) {
          throw new HarnessError('AGENT', `blob ${entry.hash} for ${entry.path} is not in the guest's store`, {
            fix: 'send it with putBlob first (Sandbox.copyIn does)',
          })
        }
        throw err
      })
      await chmod(target, entry.mode & 0o7777)
      await own(target, owner)
    } else {
      if (entry.target === undefined) throw new HarnessError('AGENT', `symlink entry ${entry.path} has no target`)
      await unlink(target).catch(() => undefined)
      await symlink(entry.target, target)
      await lchownIf(target, owner)
    }
  }
}

function kindOf(stat: { isFile(): boolean; isDirectory(): boolean; isSymbolicLink(): boolean }): GuestStat['kind'] {
  return stat.isFile() ? 'file' : stat.isDirectory() ? 'dir' : stat.isSymbolicLink() ? 'symlink' : 'other'
}

export async function statPath(path: string): Promise<GuestStat | null> {
  try {
    const s = await lstat(absolute(path))
    return { kind: kindOf(s), size: s.size, mode: s.mode & 0o7777, mtimeMs: s.mtimeMs }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null
    throw err
  }
}

/** Every file, directory and link under `path`, parents before children. */
export async function list(path: string): Promise<ListEntry[]> {
  const base = absolute(path)
  const out: ListEntry[] = []
  const walk = async (rel: string): Promise<void> => {
    const names = (await readdir(rel ? join(base, rel) : base)).sort()
    for (const name of names) {
      const relPath = rel ? join(rel, name) : name
      const full = join(base, relPath)
      const s = await lstat(full)
      const kind = kindOf(s)
      if (kind === 'other') continue
      out.push({
        path: relPath,
        kind,
        mode: s.mode & 0o7777,
        size: kind === 'file' ? s.size : 0,
        ...(kind === 'symlink' ? { target: await readlink(full) } : {}),
      })
      if (kind === 'dir') await walk(relPath)
    }
  }
  const top = await lstat(base)
  if (!top.isDirectory()) throw new HarnessError('AGENT', `${base} is not a directory`)
  await walk('')
  return out
}

/** Open a file and stream it into `sink`; resolves with its size and mode once opened, before the bytes flow. */
export async function readInto(path: string, sink: Writable): Promise<{ size: number; mode: number; done: Promise<void> }> {
  const file = absolute(path)
  const handle = await open(file, 'r')
  const s = await handle.stat()
  if (!s.isFile()) {
    await handle.close()
    throw new HarnessError('AGENT', `${file} is not a regular file`)
  }
  const done = pipeline(handle.createReadStream({ highWaterMark: 256 * 1024 }), sink)
  return { size: s.size, mode: s.mode & 0o7777, done }
}

export async function remove(path: string): Promise<void> {
  const target = absolute(path)
  if (target === '/') throw new HarnessError('AGENT', 'refusing to remove /')
  await rm(target, { recursive: true, force: true })
}
