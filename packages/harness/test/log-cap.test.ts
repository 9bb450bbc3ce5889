import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, test } from 'vitest'
import { isAlive } from '../src/host/process.js'
import { capLog, capLogsDetached, LOG_CAP_BYTES, LOG_CAP_KEEP_BYTES } from '../src/vmm/log-cap.js'

const dir = mkdtempSync(join(tmpdir(), 'log-cap-'))

describe('the host caps the logs a guest writes (#19 bounds)', () => {
  test('a log over the cap keeps its last bytes after a line that says so; one under it is untouched', () => {
    const path = join(dir, 'serial.log')
    writeFileSync(path, `${'a'.repeat(5000)}\n${'b'.repeat(999)}\n`)
    expect(capLog(path, 10_000, 1000)).toBe(false)
    expect(capLog(path, 4000, 1000)).toBe(true)
    const text = readFileSync(path, 'utf8')
    expect(text).toBe(`[stereos-harness: this log passed 4000 bytes; 5001 earlier bytes were dropped, the last 1000 follow]\n${'b'.repeat(999)}\n`)
  })

  test('a writer that appends (as QEMU does with append=on) keeps writing at the new end: the file stays bounded, no hole', async () => {
    const path = join(dir, 'flood.log')
    writeFileSync(path, '')
    // Opened with 'a' (O_APPEND), as QEMU's file chardev with append=on does: 1000 writes of 4 KiB, 1 ms apart.
    const script = `const fs = require('fs'); const fd = fs.openSync(process.argv[1], 'a'); let i = 0;
      const next = () => { if (i++ === 1000) { fs.writeSync(fd, 'END\\n'); return } fs.writeSync(fd, 'x'.repeat(4095) + '\\n'); setTimeout(next, 1) }; next()`
    const writer = spawn(process.execPath, ['-e', script, path], { stdio: 'inherit' })
    const done = new Promise<void>((resolve) => writer.once('exit', () => resolve()))
    let capped = 0
    let running = true
    void done.then(() => (running = false))
    while (running) {
      if (capLog(path, 64 * 1024, 8 * 1024)) capped++
      await new Promise((r) => setTimeout(r, 5))
    }
    await done
    capLog(path, 64 * 1024, 8 * 1024)
    const text = readFileSync(path, 'utf8')
    expect(capped).toBeGreaterThan(0)
    expect(statSync(path).size).toBeLessThanOrEqual(64 * 1024)
    // Sparse holes would read as NUL bytes: truncation under a non-append writer leaves them.
    expect(text.includes('\0')).toBe(false)
    expect(text.trimEnd().endsWith('END')).toBe(true)
  })

  test('a missing log is not created; a link is not followed', () => {
    expect(capLog(join(dir, 'missing.log'), 1, 1)).toBe(false)
    const target = join(dir, 'target')
    writeFileSync(target, 'x'.repeat(100))
    symlinkSync(target, join(dir, 'link.log'))
    expect(capLog(join(dir, 'link.log'), 10, 5)).toBe(false)
    expect(readFileSync(target, 'utf8')).toBe('x'.repeat(100))
  })

  test('a kept VM: a detached keeper goes on capping its logs after the booting process, and ends with its QEMU', async () => {
    const vmDir = mkdtempSync(join(dir, 'vm-'))
    const serial = join(vmDir, 'serial.log')
    writeFileSync(serial, Buffer.alloc(LOG_CAP_BYTES + 4096, 'x'))
    // A stand-in for a kept QEMU: a process whose argv names the VM dir, as QEMU's does.
    const qemu = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60_000)', vmDir], { stdio: 'ignore' })
    const keeper = capLogsDetached(qemu.pid as number, vmDir, [serial, join(vmDir, 'qemu.log')])
    expect(keeper).toBeGreaterThan(0)
    // Cut to its last bytes after the line that says so (read whole: the cut truncates, then writes back).
    await waitFor(() => readFileSync(serial, 'utf8').startsWith('[stereos-harness: this log passed'), 10_000)
    await waitFor(() => statSync(serial).size === LOG_CAP_KEEP_BYTES + readFileSync(serial, 'utf8').indexOf('\n') + 1, 5_000)
    qemu.kill('SIGKILL')
    await waitFor(() => !isAlive(keeper as number), 10_000)
  })
})

async function waitFor(check: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`not so after ${timeoutMs} ms`)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}
