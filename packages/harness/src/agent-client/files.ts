import { createHash } from 'node:crypto'
import { createReadStream, createWriteStream } from 'node:fs'
import { lstat, mkdir, readdir, readlink, rm, symlink, chmod } from 'node:fs/promises'
import { dirname, join, posix, relative, sep } from 'node:path'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { HarnessError } from '../errors.js'
import type { GuestUser, PlaceEntry } from '../wire/messages.js'
import type { WirePeer } from '../wire/peer.js'

export interface WriteFileOptions {
  /** File mode (default 0o644). */
  mode?: number
  /** Owner in the guest: `agent` (default) or `root` (needs bootstrap 'ssh'). */
  user?: GuestUser
}

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
    throw new HarnessError('INVALID_OPTIONS', `copyIn: ${hostPath} cannot be read: ${err.code ?? err.message}`, { fix: 'pass an existing host file or directory' })
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

export async function readFile(peer: WirePeer, path: string): Promise<Buffer> {
  const channel = peer.openChannel().readOnly()
  const chunks: Buffer[] = []
  channel.on('data', (chunk: Buffer) => chunks.push(chunk))
  const ended = new Promise<void>((resolve, reject) => {
    channel.once('end', resolve)
    channel.once('error', reject)
  })
  ended.catch(() => undefined)
  try {
    const { size } = await peer.request('read', { path, channel: channel.id })
    await ended
    const out = Buffer.concat(chunks)
    if (out.length !== size) throw new HarnessError('AGENT', `${path}: read ${out.length} bytes, the guest announced ${size} (the file changed while it was read?)`)
    return out
  } catch (err) {
    channel.destroy()
    throw err
  }
}

async function readInto(peer: WirePeer, guestPath: string, hostFile: string, mode: number): Promise<number> {
  const channel = peer.openChannel().readOnly()
  const sink = createWriteStream(hostFile, { mode })
  const written = pipeline(channel, sink)
  try {
    const { size } = await peer.request('read', { path: guestPath, channel: channel.id })
    await written
    await chmod(hostFile, mode)
    return size
  } catch (err) {
    channel.destroy()
    await written.catch(() => undefined)
    throw err
  }
}

export async function copyOut(peer: WirePeer, guestPath: string, hostPath: string): Promise<CopyReport> {
  const { stat } = await peer.request('stat', { path: guestPath })
  if (!stat) throw new HarnessError('AGENT', `copyOut: ${guestPath} does not exist in the guest`)
  if (stat.kind === 'file') {
    await mkdir(dirname(hostPath), { recursive: true })
    const bytes = await readInto(peer, guestPath, hostPath, stat.mode)
    return { files: 1, bytes, sentBytes: bytes }
  }
  if (stat.kind !== 'dir') throw new HarnessError('AGENT', `copyOut: ${guestPath} is a ${stat.kind}, not a file or directory`)
  const { entries } = await peer.request('list', { path: guestPath })
  await mkdir(hostPath, { recursive: true })
  const files: { path: string; mode: number }[] = []
  for (const entry of entries) {
    const target = join(hostPath, ...entry.path.split('/'))
    if (relative(hostPath, target).startsWith('..')) throw new HarnessError('PROTOCOL', `the agent listed ${entry.path}, outside ${guestPath}`)
    if (entry.kind === 'dir') await mkdir(target, { recursive: true })
    else if (entry.kind === 'symlink') {
      await rm(target, { force: true })
      await symlink(entry.target ?? '', target)
    } else files.push({ path: entry.path, mode: entry.mode })
  }
  let bytes = 0
  const queue = [...files]
  const worker = async () => {
    for (let file = queue.shift(); file; file = queue.shift()) {
      bytes += await readInto(peer, posix.join(guestPath, file.path), join(hostPath, ...file.path.split('/')), file.mode)
    }
  }
  await Promise.all(Array.from({ length: Math.min(PARALLEL, queue.length) }, worker))
  for (const entry of entries) if (entry.kind === 'dir') await chmod(join(hostPath, ...entry.path.split('/')), entry.mode)
  return { files: files.length, bytes, sentBytes: bytes }
}
