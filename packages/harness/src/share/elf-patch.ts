/**
 * Rewrites where a 64-bit little-endian ELF executable finds its loader (PT_INTERP) and its
 * libraries (DT_RPATH), as `patchelf --set-interpreter … --force-rpath --set-rpath …` does, in
 * plain JavaScript: the host needs no patchelf (macOS included), and the npm Node binary becomes
 * one that starts on a guest without an FHS loader (NixOS's /lib64/ld-linux-x86-64.so.2 is a
 * stub that refuses it).
 *
 * Method: the new interpreter string, a copy of the dynamic section and of the dynamic string
 * table with the rpath appended go into one block at the end of the file, mapped by a new
 * PT_LOAD that takes over the PT_NOTE program header (notes are not needed to run: the ABI tag
 * and build id). PT_INTERP and PT_DYNAMIC point into that block; old string offsets stay valid
 * because the old table is copied whole. Section headers for .interp/.dynamic/.dynstr follow, so
 * readelf shows the result. DT_RPATH (not RUNPATH): it is searched before LD_LIBRARY_PATH and for
 * every library in the process, so the guest's own libc can never pair with the shipped loader.
 */
import { HarnessError } from '../errors.js'

const PT_LOAD = 1
const PT_DYNAMIC = 2
const PT_INTERP = 3
const PT_NOTE = 4
const DT_NULL = 0n
const DT_STRTAB = 5n
const DT_STRSZ = 10n
const DT_RPATH = 15n
const DT_RUNPATH = 29n
/** Alignment of the new segment: a multiple of every page size Linux uses (4, 16, 64 KiB). */
const ALIGN = 0x10000

export interface ElfPatch {
  /** Absolute path of the loader, e.g. /opt/stereos-harness/node/lib/ld-linux-x86-64.so.2. */
  interpreter: string
  /** Colon-separated directories searched first for every library. */
  rpath: string
}

interface Phdr {
  index: number
  at: number
  type: number
  offset: number
  vaddr: number
  filesz: number
  memsz: number
}

function fail(message: string): never {
  throw new HarnessError('HOST', `cannot patch the guest Node binary: ${message}`, {
    fix: 'the harness share needs the official Node build for linux-x64/linux-arm64 from npm (node-linux-*); remove the harness cache (~/.cache/stereos-harness/guest-node) so it is fetched again',
  })
}

const align = (n: number, a: number): number => Math.ceil(n / a) * a

/** The patched copy of `elf`; `elf` itself is not changed. */
export function patchElf(elf: Buffer, patch: ElfPatch): Buffer {
  if (elf.readUInt32BE(0) !== 0x7f454c46) fail('not an ELF file')
  if (elf[4] !== 2 || elf[5] !== 1) fail('not a 64-bit little-endian ELF file')
  const type = elf.readUInt16LE(16)
  if (type !== 2 && type !== 3) fail(`ELF type ${type} is not an executable`)
  const num = (at: number): number => Number(elf.readBigUInt64LE(at))

  const phoff = num(0x20)
  const phentsize = elf.readUInt16LE(0x36)
  const phnum = elf.readUInt16LE(0x38)
  const phdrs: Phdr[] = []
  for (let i = 0; i < phnum; i++) {
    const at = phoff + i * phentsize
    phdrs.push({ index: i, at, type: elf.readUInt32LE(at), offset: num(at + 8), vaddr: num(at + 16), filesz: num(at + 32), memsz: num(at + 40) })
  }
  const loads = phdrs.filter((p) => p.type === PT_LOAD)
  const interp = phdrs.find((p) => p.type === PT_INTERP)
  const dynamic = phdrs.find((p) => p.type === PT_DYNAMIC)
  const note = phdrs.find((p) => p.type === PT_NOTE)
  if (!interp || !dynamic) fail('it is not dynamically linked (no PT_INTERP or PT_DYNAMIC)')
  // PT_LOAD headers must stay sorted by address: the new, highest one must come after the others.
  if (!note || loads.some((l) => l.index > note.index)) fail('it has no PT_NOTE header after its PT_LOAD headers to carry the new segment')
  const toOffset = (vaddr: number): number => {
    const load = loads.find((l) => vaddr >= l.vaddr && vaddr < l.vaddr + l.filesz)
    if (!load) fail(`address 0x${vaddr.toString(16)} is in no loaded segment`)
    return load.offset + (vaddr - load.vaddr)
  }

  // The dynamic entries, without an old rpath/runpath.
  const entries: Array<[bigint, bigint]> = []
  for (let at = dynamic.offset; at + 16 <= dynamic.offset + dynamic.filesz; at += 16) {
    const tag = elf.readBigInt64LE(at)
    if (tag === DT_NULL) break
    if (tag !== DT_RPATH && tag !== DT_RUNPATH) entries.push([tag, elf.readBigUInt64LE(at + 8)])
  }
  const strtab = entries.find(([t]) => t === DT_STRTAB)
  const strsz = entries.find(([t]) => t === DT_STRSZ)
  if (!strtab || !strsz) fail('its dynamic section has no string table')
  const oldStrtab = Number(strtab[1])
  const oldStrsz = Number(strsz[1])
  const strings = elf.subarray(toOffset(oldStrtab), toOffset(oldStrtab) + oldStrsz)

  // The block: dynamic section (8-aligned, room for the new entry and a NULL), interpreter, strings.
  const base = align(elf.length, ALIGN)
  const vbase = align(Math.max(...loads.map((l) => l.vaddr + l.memsz)), ALIGN) + (base % ALIGN)
  const dynSize = (entries.length + 2) * 16
  const interpAt = dynSize
  const interpBytes = Buffer.from(`${patch.interpreter}\0`)
  const strAt = align(interpAt + interpBytes.length, 8)
  const rpathBytes = Buffer.from(`${patch.rpath}\0`)
  const blockSize = strAt + strings.length + rpathBytes.length
  const block = Buffer.alloc(blockSize)
  entries.push([DT_RPATH, BigInt(strings.length)])
  for (const entry of entries) {
    if (entry[0] === DT_STRTAB) entry[1] = BigInt(vbase + strAt)
    if (entry[0] === DT_STRSZ) entry[1] = BigInt(strings.length + rpathBytes.length)
  }
  entries.forEach(([tag, value], i) => {
    block.writeBigInt64LE(tag, i * 16)
    block.writeBigUInt64LE(value, i * 16 + 8)
  })
  interpBytes.copy(block, interpAt)
  strings.copy(block, strAt)
  rpathBytes.copy(block, strAt + strings.length)

  const out = Buffer.alloc(base + blockSize)
  elf.copy(out)
  block.copy(out, base)
  const setPhdr = (p: Phdr, fields: { type?: number; flags?: number; offset: number; vaddr: number; size: number; align?: number }): void => {
    if (fields.type !== undefined) out.writeUInt32LE(fields.type, p.at)
    if (fields.flags !== undefined) out.writeUInt32LE(fields.flags, p.at + 4)
    out.writeBigUInt64LE(BigInt(fields.offset), p.at + 8)
    out.writeBigUInt64LE(BigInt(fields.vaddr), p.at + 16)
    out.writeBigUInt64LE(BigInt(fields.vaddr), p.at + 24)
    out.writeBigUInt64LE(BigInt(fields.size), p.at + 32)
    out.writeBigUInt64LE(BigInt(fields.size), p.at + 40)
    if (fields.align !== undefined) out.writeBigUInt64LE(BigInt(fields.align), p.at + 48)
  }
  // Read-write: the loader stores its debugger hook in DT_DEBUG.
  setPhdr(note, { type: PT_LOAD, flags: 4 | 2, offset: base, vaddr: vbase, size: blockSize, align: ALIGN })
  setPhdr(interp, { offset: base + interpAt, vaddr: vbase + interpAt, size: interpBytes.length })
  setPhdr(dynamic, { offset: base, vaddr: vbase, size: dynSize })
  moveSections(out, [
    { from: interp.offset, offset: base + interpAt, addr: vbase + interpAt, size: interpBytes.length },
    { from: dynamic.offset, offset: base, addr: vbase, size: dynSize },
    { from: toOffset(oldStrtab), offset: base + strAt, addr: vbase + strAt, size: strings.length + rpathBytes.length },
  ])
  return out
}

/** Section headers that described a moved part (matched by file offset) now describe its copy. */
function moveSections(out: Buffer, moves: Array<{ from: number; offset: number; addr: number; size: number }>): void {
  const shoff = Number(out.readBigUInt64LE(0x28))
  const shentsize = out.readUInt16LE(0x3a)
  const shnum = out.readUInt16LE(0x3c)
  if (shoff === 0 || shoff + shnum * shentsize > out.length) return
  for (let i = 0; i < shnum; i++) {
    const at = shoff + i * shentsize
    if (out.readUInt32LE(at + 4) === 0) continue // SHT_NULL
    const move = moves.find((m) => m.from === Number(out.readBigUInt64LE(at + 24)))
    if (!move) continue
    out.writeBigUInt64LE(BigInt(move.addr), at + 16)
    out.writeBigUInt64LE(BigInt(move.offset), at + 24)
    out.writeBigUInt64LE(BigInt(move.size), at + 32)
  }
}

/** The loader a Linux Node of `npmArch` (x64, arm64) asks for, by file name. */
export const LOADER_NAME: Record<string, string> = { x64: 'ld-linux-x86-64.so.2', arm64: 'ld-linux-aarch64.so.1' }
