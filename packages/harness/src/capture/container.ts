import { closeSync, createReadStream, createWriteStream, fstatSync, openSync, readSync } from 'node:fs'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { HarnessError } from '../errors.js'

/**
 * A capture's container: a plain POSIX tar (ustar) of a few flat members, written and read here
 * with node streams. Plain tar so that `tar -xf capture.stcap` opens it without this tool; the
 * members compress themselves (the migration stream and the disk are zstd). The reader walks the
 * headers with positional reads (no parsing of a stream) and hands out each member as a byte range.
 */
const BLOCK = 512
/** Member names: flat, short and plain, so no reader (ours or tar) writes outside its directory. */
const MEMBER_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/

export interface MemberSource {
  name: string
  /** A host file, streamed into the container. */
  file?: string
  /** Or the bytes themselves (the manifest). */
  data?: Buffer
}

export interface Member {
  name: string
  size: number
  /** Offset of the member's first byte in the container. */
  offset: number
}

/** Write `members` in order to `path` (created new; the caller renames it into place). */
export async function writeContainer(path: string, members: MemberSource[]): Promise<void> {
  const out = createWriteStream(path, { flags: 'wx', mode: 0o600 })
  async function* blocks(): AsyncGenerator<Buffer> {
    for (const member of members) {
      if (!MEMBER_NAME.test(member.name)) throw new Error(`bad member name ${member.name}`)
      const size = member.data ? member.data.length : fstatSizeOf(member.file)
      yield header(member.name, size)
      let written = 0
      if (member.data) {
        yield member.data
        written = member.data.length
      } else if (member.file) {
        for await (const chunk of createReadStream(member.file) as AsyncIterable<Buffer>) {
          written += chunk.length
          yield chunk
        }
      }
      // A member that grew or shrank while it was copied would corrupt every header after it.
      if (written !== size) throw new Error(`${member.name} changed size while it was written (${size} → ${written} bytes)`)
      const pad = (BLOCK - (size % BLOCK)) % BLOCK
      if (pad) yield Buffer.alloc(pad)
    }
    yield Buffer.alloc(BLOCK * 2)
  }
  await pipeline(blocks, out)
}

function fstatSizeOf(file: string | undefined): number {
  if (!file) return 0
  const fd = openSync(file, 'r')
  try {
    return fstatSync(fd).size
  } finally {
    closeSync(fd)
  }
}

/** One ustar header block. Sizes past ustar's 8 GiB use GNU's base-256 field. */
export function header(name: string, size: number): Buffer {
  const block = Buffer.alloc(BLOCK)
  block.write(name, 0, 100, 'utf8')
  octal(block, 100, 8, 0o600)
  octal(block, 108, 8, 0)
  octal(block, 116, 8, 0)
  if (size < 8 ** 11) octal(block, 124, 12, size)
  else {
    block[124] = 0x80
    block.writeBigUInt64BE(BigInt(size), 128)
  }
  octal(block, 136, 12, Math.floor(Date.now() / 1000))
  block.write('        ', 148, 8, 'ascii')
  block.write('0', 156, 1, 'ascii')
  block.write('ustar\u000000', 257, 8, 'ascii')
  let sum = 0
  for (const byte of block) sum += byte
  block.write(`${sum.toString(8).padStart(6, '0')}\u0000 `, 148, 8, 'ascii')
  return block
}

function octal(block: Buffer, at: number, length: number, value: number): void {
  block.write(`${value.toString(8).padStart(length - 1, '0')}\u0000`, at, length, 'ascii')
}

function damaged(path: string, why: string): HarnessError {
  return new HarnessError('CAPTURE', `${path} is not a readable capture: ${why}`, {
    fix: 'the file is damaged or incomplete (an upload cut short?): download it again',
  })
}

/** The members of the container at `path`, checked against its length: a truncated file is refused here. */
export function readMembers(path: string): Member[] {
  const fd = openSync(path, 'r')
  try {
    const length = fstatSync(fd).size
    const members: Member[] = []
    const block = Buffer.alloc(BLOCK)
    let at = 0
    for (;;) {
      if (at + BLOCK > length) throw damaged(path, `it ends at byte ${length}, inside a header`)
      readSync(fd, block, 0, BLOCK, at)
      if (block.every((b) => b === 0)) return members
      const name = block.toString('utf8', 0, 100).replace(/\0.*$/s, '')
      if (block.toString('ascii', 257, 262) !== 'ustar' || !MEMBER_NAME.test(name)) throw damaged(path, `no member header at byte ${at}`)
      if (!checksumOk(block)) throw damaged(path, `the header of ${name} has a wrong checksum`)
      const size = sizeField(block)
      const offset = at + BLOCK
      if (offset + size > length) throw damaged(path, `${name} needs ${size} bytes, the file ends ${length - offset} bytes into it`)
      members.push({ name, size, offset })
      at = offset + Math.ceil(size / BLOCK) * BLOCK
    }
  } finally {
    closeSync(fd)
  }
}

function checksumOk(block: Buffer): boolean {
  const stored = Number.parseInt(block.toString('ascii', 148, 156).replace(/[\0 ]/g, ''), 8)
  let sum = 0
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : (block[i] ?? 0)
  return stored === sum
}

function sizeField(block: Buffer): number {
  if ((block[124] ?? 0) & 0x80) return Number(block.readBigUInt64BE(128))
  return Number.parseInt(block.toString('ascii', 124, 136).replace(/[\0 ]/g, '') || '0', 8)
}

/** A member's bytes as a stream. */
export function memberStream(path: string, member: Member): Readable {
  if (member.size === 0) return Readable.from([])
  return createReadStream(path, { start: member.offset, end: member.offset + member.size - 1 })
}

/** A small member in memory (at most `maxBytes`). */
export function readMember(path: string, member: Member, maxBytes: number): Buffer {
  if (member.size > maxBytes) throw damaged(path, `${member.name} is ${member.size} bytes, more than the ${maxBytes} it may have`)
  const fd = openSync(path, 'r')
  try {
    const data = Buffer.alloc(member.size)
    readSync(fd, data, 0, member.size, member.offset)
    return data
  } finally {
    closeSync(fd)
  }
}
