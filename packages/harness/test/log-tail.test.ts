import { mkdtempSync, openSync, closeSync, truncateSync, writeFileSync, writeSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, test } from 'vitest'
import { logTailLines, readLogTail } from '../src/host/log-tail.js'
import { tail } from '../src/vmm/qemu-process.js'

const dir = mkdtempSync(join(tmpdir(), 'log-tail-'))

/** A sparse file of `size` bytes whose last bytes are `end`: huge on paper, nothing on disk. */
function sparseLog(name: string, size: number, end: string): string {
  const path = join(dir, name)
  writeFileSync(path, '')
  truncateSync(path, size - end.length)
  const fd = openSync(path, 'a')
  writeSync(fd, end)
  closeSync(fd)
  return path
}

describe('log tails read a bounded suffix (#19 bounds)', () => {
  test('a guest console of 8 GiB still gives its last lines (a whole-file read could not)', () => {
    const path = sparseLog('serial.log', 8 * 1024 ** 3, '\nbooting\nlast words\n')
    expect(tail(path, 2)).toBe('booting\nlast words')
    expect(readLogTail(path, 11).toString()).toBe('last words\n')
  })

  test('one endless line comes back no longer than the bound', () => {
    const path = join(dir, 'one-line.log')
    writeFileSync(path, 'x'.repeat(1024 * 1024))
    expect(logTailLines(path, 15, 4096)).toBe('x'.repeat(4096))
    expect(tail(path).length).toBe(64 * 1024)
    expect(readLogTail(path).length).toBe(256 * 1024)
  })

  test('a missing log, an empty one', () => {
    expect(tail(join(dir, 'nope.log'))).toBe('(missing)')
    expect(readLogTail(join(dir, 'nope.log')).length).toBe(0)
    writeFileSync(join(dir, 'empty.log'), '')
    expect(tail(join(dir, 'empty.log'))).toBe('(empty)')
  })
})
