import { createHash } from 'node:crypto'
import { constants, createReadStream } from 'node:fs'
import { chmod, lstat, mkdir, open, readdir, readlink, realpath, symlink, unlink } from 'node:fs/promises'
import { dirname, join, posix, relative, sep } from 'node:path'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { HarnessError } from '../errors.js'
import type { GuestUser, ListEntry, PlaceEntry } from '../wire/messages.js'
import type { WirePeer } from '../wire/peer.js'

export interface WriteFileOptions {
  /** File mode (default 0o644). */
  mode?: number
  /** Owner in the guest: `agent` (default) or `root` (needs bootstrap 'ssh'). */
  user?: GuestUser
}

export interface ReadFileOptions {
  /** Refuse a file larger than this many bytes (default DEFAULT_READ_FILE_MAX_BYTES, 64 MiB). */
  maxBytes?: number
}

/**
 * readFile holds the whole file in host memory. 64 MiB covers the logs, reports, snapshots and
 * attachments tests read, while a runaway or hostile guest file (a 1.5 GiB sparse file became a
 * 1.5 GiB Buffer) cannot exhaust the host; copyOut streams larger files to disk.
 */
export const DEFAULT_READ_FILE_MAX_BYTES = 64 * 1024 * 1024

export interface CopyOptions {
  user?: GuestUser
}

export interface CopyReport {
  files: number
  /** Bytes of file content in the tree. */
  bytes: number
  /** Bytes actually sent (copyIn: only what the guest's store lacked). */
  sentBytes: number
}

/** Blobs sent at once: enough to keep the link busy, few enough to bound open files. */
const PARALLEL = 4

interface LocalFile {
  entry: PlaceEntry
  source: string | Buffer
  size: number
}

function toGuestRel(rel: string): string {
  return rel.split(sep).join(posix.sep)
}

async function hashFile(path: string): Promise<string> {
  const hash = createHash('sha256')
  await pipeline(createReadStream(path, { highWaterMark: 1024 * 1024 }), hash)
  return hash.digest('hex')
}

/** Walks a host path into place entries (files hashed), parents first. */
async function scan(hostPath: string): Promise<{ root: 'file' | 'dir'; files: LocalFile[]; others: PlaceEntry[] }> {
  const top = await lstat(hostPath).catch((err: NodeJS.ErrnoException) => {
    throw new HarnessError('INVALID_OPTIONS', `copyIn: ${hostPath} cannot be read: ${err.code ?? err.message}`, {
      fix: 'pass an existing host file or directory',
    })
  })
  const files: LocalFile[] = []
  const others: PlaceEntry[] = []
  const addFile = async (full: string, rel: string, mode: number, size: number) => {
    files.push({ entry: { path: rel, kind: 'file', mode, hash: await hashFile(full) }, source: full, size })
  }
  if (top.isFile()) {
    await addFile(hostPath, '.', top.mode & 0o7777, top.size)
    return { root: 'file', files, others }
  }
  if (!top.isDirectory()) throw new HarnessError('INVALID_OPTIONS', `copyIn: ${hostPath} is neither a file nor a directory`)
  const walk = async (dir: string): Promise<void> => {
    for (const name of (await readdir(dir)).sort()) {
      const full = join(dir, name)
      const rel = toGuestRel(relative(hostPath, full))
      const s = await lstat(full)
      if (s.isDirectory()) {
        others.push({ path: rel, kind: 'dir', mode: s.mode & 0o7777 })
        await walk(full)
      } else if (s.isFile()) {
        await addFile(full, rel, s.mode & 0o7777, s.size)
      } else if (s.isSymbolicLink()) {
        others.push({ path: rel, kind: 'symlink', mode: 0o777, target: await readlink(full) })
      }
    }
  }
  await walk(hostPath)
  return { root: 'dir', files, others }
}

/** Sends the blobs the guest lacks, PARALLEL at a time; returns bytes sent. */
async function sendMissing(peer: WirePeer, files: LocalFile[]): Promise<number> {
  const byHash = new Map<string, LocalFile>()
  for (const file of files) byHash.set(file.entry.hash as string, file)
  const { missing } = await peer.request('missing', { hashes: [...byHash.keys()] })
  const queue = missing.map((hash) => {
    const file = byHash.get(hash)
    if (!file) throw new HarnessError('PROTOCOL', `the agent asked for blob ${hash}, which was not offered`)
    return file
  })
  let sent = 0
  const worker = async () => {
    for (let file = queue.shift(); file; file = queue.shift()) {
      const channel = peer.openChannel()
      const reply = peer.request('putBlob', { hash: file.entry.hash as string, size: file.size, channel: channel.id })
      const source = typeof file.source === 'string' ? createReadStream(file.source, { highWaterMark: 256 * 1024 }) : Readable.from([file.source])
      await Promise.all([pipeline(source, channel), reply])
      sent += file.size
    }
  }
  await Promise.all(Array.from({ length: Math.min(PARALLEL, queue.length) }, worker))
  return sent
}

export async function copyIn(peer: WirePeer, hostPath: string, guestPath: string, options: CopyOptions = {}): Promise<CopyReport> {
  const { root, files, others } = await scan(hostPath)
  const sentBytes = await sendMissing(peer, files)
  const user = options.user ? { user: options.user } : {}
  if (root === 'file') {
    const file = files[0] as LocalFile
    await peer.request('place', { root: posix.dirname(guestPath), entries: [{ ...file.entry, path: posix.basename(guestPath) }], ...user })
  } else {
    await peer.request('place', { root: guestPath, entries: [...others, ...files.map((f) => f.entry)], ...user })
  }
  return { files: files.length, bytes: files.reduce((n, f) => n + f.size, 0), sentBytes }
}

export async function writeFile(peer: WirePeer, path: string, data: string | Uint8Array, options: WriteFileOptions = {}): Promise<void> {
  const bytes = typeof data === 'string' ? Buffer.from(data) : Buffer.from(data.buffer, data.byteOffset, data.byteLength)
  const hash = createHash('sha256').update(bytes).digest('hex')
  const file: LocalFile = { entry: { path: posix.basename(path), kind: 'file', mode: options.mode ?? 0o644, hash }, source: bytes, size: bytes.length }
  await sendMissing(peer, [file])
  await peer.request('place', { root: posix.dirname(path), entries: [file.entry], ...(options.user ? { user: options.user } : {}) })
}

function tooLarge(path: string, size: string, maxBytes: number): HarnessError {
  return new HarnessError('AGENT', `readFile: ${path} is ${size} bytes, over the readFile limit of ${maxBytes} bytes (maxBytes)`, {
    fix: 'pass a larger maxBytes (readFile(path, { maxBytes })), or use copyOut, which streams the file to disk',
  })
}

/** Read a guest file into memory: refused before any byte is buffered when the agent announces more than maxBytes, and cut off when more arrives. */
export async function readFile(peer: WirePeer, path: string, options: ReadFileOptions = {}): Promise<Buffer> {
  const maxBytes = options.maxBytes ?? DEFAULT_READ_FILE_MAX_BYTES
  if (!Number.isSafeInteger(maxBytes) || maxBytes < 0) {
    throw new HarnessError('INVALID_OPTIONS', `readFile: maxBytes must be a non-negative integer, got ${maxBytes}`, {
      fix: 'pass a byte count, e.g. { maxBytes: 256 * 1024 * 1024 }',
    })
  }
  const { stat } = await peer.request('stat', { path })
  if (stat?.kind === 'file' && stat.size > maxBytes) throw tooLarge(path, String(stat.size), maxBytes)
  const channel = peer.openChannel().readOnly()
  const chunks: Buffer[] = []
  let received = 0
  let overflow: HarnessError | undefined
  const ended = new Promise<void>((resolve, reject) => {
    channel.once('end', resolve)
    channel.once('error', reject)
    channel.once('close', () => (overflow ? reject(overflow) : undefined))
  })
  ended.catch(() => undefined)
  channel.on('data', (chunk: Buffer) => {
    received += chunk.length
    if (received <= maxBytes) return void chunks.push(chunk)
    // The file grew after stat, or the agent lies about it: stop it here (the window bounds what is in flight).
    overflow ??= tooLarge(path, `at least ${received}`, maxBytes)
    chunks.length = 0
    channel.reset('readFile: over maxBytes')
  })
  try {
    const { size } = await peer.request('read', { path, channel: channel.id })
    if (size > maxBytes) throw tooLarge(path, String(size), maxBytes)
    await ended
    if (overflow) throw overflow
    const out = Buffer.concat(chunks)
    if (out.length !== size)
      throw new HarnessError('AGENT', `${path}: read ${out.length} bytes, the guest announced ${size} (the file changed while it was read?)`)
    return out
  } catch (err) {
    channel.destroy()
    throw overflow ?? err
  }
}

/** Never more than rwx for owner, group and others: a guest cannot make the host hold setuid files. */
const PLAIN_MODE = 0o777

/**
 * Make room for a new entry at `target` without following links: a file or link already there is
 * removed (copies overwrite), a directory is refused.
 */
async function clearFor(target: string, what: string): Promise<void> {
  const existing = await lstat(target).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return undefined
    throw err
  })
  if (!existing) return
  if (existing.isDirectory())
    throw new HarnessError('AGENT', `copyOut: ${target} is a directory on the host; the guest's ${what} cannot replace it`, {
      fix: 'remove it, or copy into another directory',
    })
  await unlink(target)
}

/**
 * Stream a guest file into a new host file: created with O_EXCL|O_NOFOLLOW, so a symlink at the
 * path (planted by an earlier copy, or raced in) is never followed.
 */
async function readInto(peer: WirePeer, guestPath: string, hostFile: string, mode: number): Promise<number> {
  await clearFor(hostFile, `file ${guestPath}`)
  const handle = await open(hostFile, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, mode & PLAIN_MODE)
  const channel = peer.openChannel().readOnly()
  const sink = handle.createWriteStream()
  const written = pipeline(channel, sink)
  try {
    const { size } = await peer.request('read', { path: guestPath, channel: channel.id })
    await written
    await chmod(hostFile, mode & PLAIN_MODE)
    return size
  } catch (err) {
    channel.destroy()
    await written.catch(() => undefined)
    throw err
  }
}

/**
 * Check a guest listing before anything is written: each path relative and inside the copy
 * (no empty, `.` or `..` components), listed once, and its parent a directory listed before it.
 * A forged agent that lists a symlink `a` and then `a/x` would otherwise write through the link.
 */
function checkListing(entries: ListEntry[], guestPath: string): ListEntry[] {
  const seen = new Map<string, ListEntry['kind']>()
  for (const entry of entries) {
    const parts = entry.path.split('/')
    if (parts.some((part) => part === '' || part === '.' || part === '..' || part.includes('\0'))) {
      throw new HarnessError('PROTOCOL', `copyOut: the agent listed ${JSON.stringify(entry.path)}, which is not a plain relative path inside ${guestPath}`)
    }
    if (seen.has(entry.path)) throw new HarnessError('PROTOCOL', `copyOut: the agent listed ${entry.path} twice (as ${seen.get(entry.path)} and ${entry.kind})`)
    const parent = parts.slice(0, -1).join('/')
    if (parent && seen.get(parent) !== 'dir') {
      throw new HarnessError(
        'PROTOCOL',
        `copyOut: the agent listed ${entry.path}, but its parent ${parent} is ${seen.has(parent) ? `a ${seen.get(parent)}` : 'not listed before it'}, not a directory`,
      )
    }
    seen.set(entry.path, entry.kind)
  }
  return entries
}

/** Refuse a destination path whose parent is not exactly where it should be (a symlink or non-directory on the way). */
async function checkParent(root: string, rel: string): Promise<string> {
  const parts = rel.split('/')
  const target = join(root, ...parts)
  const parent = dirname(target)
  const real = await realpath(parent).catch(() => undefined)
  if (real !== parent || !(await lstat(parent)).isDirectory()) {
    throw new HarnessError('AGENT', `copyOut: ${parent} is not a plain directory under ${root} (a symlink or a file is in the way), so ${rel} is not written`, {
      fix: `remove ${parent} on the host, or copy into an empty directory`,
    })
  }
  return target
}

/**
 * Copy a guest file or tree to the host. The listing is checked first (checkListing); then
 * directories, files and, last, symlinks are created, each only inside `hostPath`: parents are
 * checked to be real directories, files are created O_EXCL|O_NOFOLLOW, modes lose setuid bits.
 */
export async function copyOut(peer: WirePeer, guestPath: string, hostPath: string): Promise<CopyReport> {
  const { stat } = await peer.request('stat', { path: guestPath })
  if (!stat) throw new HarnessError('AGENT', `copyOut: ${guestPath} does not exist in the guest`)
  if (stat.kind === 'file') {
    await mkdir(dirname(hostPath), { recursive: true })
    const bytes = await readInto(peer, guestPath, hostPath, stat.mode)
    return { files: 1, bytes, sentBytes: bytes }
  }
  if (stat.kind !== 'dir') throw new HarnessError('AGENT', `copyOut: ${guestPath} is a ${stat.kind}, not a file or directory`)
  const entries = checkListing((await peer.request('list', { path: guestPath })).entries, guestPath)
  await mkdir(hostPath, { recursive: true })
  if (!(await lstat(hostPath)).isDirectory()) {
    throw new HarnessError('AGENT', `copyOut: ${hostPath} is a symlink or not a directory`, { fix: 'copy into a real directory (pass its resolved path)' })
  }
  const root = await realpath(hostPath)
  for (const entry of entries) {
    if (entry.kind !== 'dir') continue
    const target = await checkParent(root, entry.path)
    await mkdir(target, { mode: 0o700 }).catch(async (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EEXIST') throw err
      const existing = await lstat(target)
      if (!existing.isDirectory()) {
        throw new HarnessError(
          'AGENT',
          `copyOut: ${target} exists on the host as a ${existing.isSymbolicLink() ? 'symlink' : 'file'}, where the guest has a directory`,
          { fix: 'remove it, or copy into an empty directory' },
        )
      }
    })
  }
  const files = entries.filter((entry) => entry.kind === 'file')
  let bytes = 0
  const queue = [...files]
  const worker = async () => {
    for (let file = queue.shift(); file; file = queue.shift()) {
      bytes += await readInto(peer, posix.join(guestPath, file.path), await checkParent(root, file.path), file.mode)
    }
  }
  await Promise.all(Array.from({ length: Math.min(PARALLEL, queue.length) }, worker))
  for (const entry of entries) {
    if (entry.kind !== 'symlink') continue
    const target = await checkParent(root, entry.path)
    await clearFor(target, `symlink ${entry.path}`)
    await symlink(entry.target ?? '', target)
  }
  for (const entry of entries) if (entry.kind === 'dir') await chmod(join(root, ...entry.path.split('/')), entry.mode & PLAIN_MODE)
  return { files: files.length, bytes, sentBytes: bytes }
}
