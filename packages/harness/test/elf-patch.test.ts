import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, test } from 'vitest'
import { isHarnessError } from '../src/errors.js'
import { patchElf } from '../src/share/elf-patch.js'

/** PT_INTERP's string and the DT_RPATH string of a 64-bit little-endian ELF, read independently of the patcher. */
function readElf(elf: Buffer): { interpreter: string; rpath: string | undefined } {
  const phoff = Number(elf.readBigUInt64LE(0x20))
  const phnum = elf.readUInt16LE(0x38)
  const phdrs = Array.from({ length: phnum }, (_, i) => {
    const at = phoff + i * 56
    return {
      type: elf.readUInt32LE(at),
      offset: Number(elf.readBigUInt64LE(at + 8)),
      vaddr: Number(elf.readBigUInt64LE(at + 16)),
      filesz: Number(elf.readBigUInt64LE(at + 32)),
    }
  })
  const cstr = (at: number) => elf.subarray(at, elf.indexOf(0, at)).toString()
  const offsetOf = (vaddr: number) => {
    const load = phdrs.find((p) => p.type === 1 && vaddr >= p.vaddr && vaddr < p.vaddr + p.filesz)
    if (!load) throw new Error(`0x${vaddr.toString(16)} is not loaded`)
    return load.offset + vaddr - load.vaddr
  }
  const interp = phdrs.find((p) => p.type === 3)
  const dynamic = phdrs.find((p) => p.type === 2)
  if (!interp || !dynamic) throw new Error('not dynamic')
  let strtab = 0
  let rpath: number | undefined
  for (let at = offsetOf(dynamic.vaddr); elf.readBigInt64LE(at) !== 0n; at += 16) {
    const tag = elf.readBigInt64LE(at)
    if (tag === 5n) strtab = Number(elf.readBigUInt64LE(at + 8))
    if (tag === 15n) rpath = Number(elf.readBigUInt64LE(at + 8))
  }
  return { interpreter: cstr(interp.offset), rpath: rpath === undefined ? undefined : cstr(offsetOf(strtab) + rpath) }
}

const isLinuxElf = process.platform === 'linux' && (process.arch === 'x64' || process.arch === 'arm64')
const work = mkdtempSync(join(tmpdir(), 'elf-patch-'))
afterAll(() => rmSync(work, { recursive: true, force: true }))

describe.runIf(isLinuxElf)('patchElf on the Node binary running this test', () => {
  const original = readFileSync(realpathSync(process.execPath))
  const hostLoader = readElf(original).interpreter

  test('the patched binary asks for the new loader and rpath, runs, and is its own execPath', () => {
    const node = join(work, 'node-patched')
    writeFileSync(node, patchElf(original, { interpreter: hostLoader, rpath: '/nonexistent/lib:/also/not' }), { mode: 0o755 })
    expect(readElf(readFileSync(node))).toEqual({ interpreter: hostLoader, rpath: '/nonexistent/lib:/also/not' })
    // fork() re-runs execPath: the child reports the same patched binary.
    const out = execFileSync(node, ['-e', "require('child_process').fork('-p', [], { execArgv: ['-p', 'process.execPath'] })"], { encoding: 'utf8' })
    expect(out.trim()).toBe(node)
  })

  test('the kernel takes the interpreter from the patch: a missing one fails the exec', () => {
    const node = join(work, 'node-no-loader')
    writeFileSync(node, patchElf(original, { interpreter: '/nonexistent/ld-linux.so', rpath: '/x' }), { mode: 0o755 })
    expect(() => execFileSync(node, ['--version'], { stdio: 'pipe' })).toThrow(/ENOENT/)
  })

  test('the original buffer is left as it was', () => {
    expect(readElf(original).interpreter).toBe(hostLoader)
  })
})

test('a file that is not an ELF executable is refused with a HarnessError', () => {
  let error: unknown
  try {
    patchElf(Buffer.from('#!/bin/sh\necho hi\n'), { interpreter: '/x', rpath: '/y' })
  } catch (e) {
    error = e
  }
  expect(isHarnessError(error)).toBe(true)
  expect((error as Error).message).toMatch(/not an ELF file/)
})
