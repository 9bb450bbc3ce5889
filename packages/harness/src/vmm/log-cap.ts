import { spawn } from 'node:child_process'
import { closeSync, constants, fstatSync, ftruncateSync, openSync, writeSync } from 'node:fs'
import { readFdTail } from '../host/log-tail.js'
import { entryScript } from '../host/entry-script.js'

/**
 * The guest decides how much it writes to its console (serial.log) and, through whatever QEMU
 * warns about, to qemu.log; the host caps both while QEMU runs. Both are open in QEMU with
 * O_APPEND (serial.log through `-chardev file,...,append=on`, qemu.log through the fd we give
 * it), so truncating them from here is safe: QEMU's next write lands at the new end, never
 * at its old offset. A log over LOG_CAP_BYTES is cut to its last LOG_CAP_KEEP_BYTES, after a
 * line that says so; between two checks it can pass the cap by what the guest writes meanwhile.
 */
export const LOG_CAP_BYTES = 16 * 1024 * 1024
export const LOG_CAP_KEEP_BYTES = 1024 * 1024
export const LOG_CAP_INTERVAL_MS = 1000

export interface LogCapOptions {
  maxBytes?: number
  keepBytes?: number
  intervalMs?: number
}

/**
 * Cut `path` to its last `keepBytes` when it is larger than `maxBytes`; true when it did. The
 * bytes QEMU writes between reading the kept part and truncating are lost, and those it writes
 * between truncating and putting the kept part back come before it: a log of an overflowing
 * guest, not a record. A missing file, a link or anything but a regular file is left alone.
 */
export function capLog(path: string, maxBytes = LOG_CAP_BYTES, keepBytes = LOG_CAP_KEEP_BYTES): boolean {
  let fd: number
  try {
    // No O_CREAT (a log that is not there stays so), no following a link.
    fd = openSync(path, constants.O_RDWR | constants.O_APPEND | constants.O_NOFOLLOW)
  } catch {
    return false
  }
  try {
    const stat = fstatSync(fd)
    if (!stat.isFile() || stat.size <= maxBytes) return false
    const kept = readFdTail(fd, keepBytes)
    ftruncateSync(fd, 0)
    const marker = Buffer.from(
      `[stereos-harness: this log passed ${maxBytes} bytes; ${stat.size - kept.length} earlier bytes were dropped, the last ${kept.length} follow]\n`,
    )
    const out = Buffer.concat([marker, kept])
    for (let written = 0; written < out.length; ) written += writeSync(fd, out, written)
    return true
  } catch {
    return false
  } finally {
    closeSync(fd)
  }
}

/** Check `paths` every `intervalMs` until stopped; the timer never holds this process open. */
export function watchLogCaps(paths: string[], options: LogCapOptions = {}): { stop(): void } {
  const timer = setInterval(() => {
    for (const path of paths) capLog(path, options.maxBytes, options.keepBytes)
  }, options.intervalMs ?? LOG_CAP_INTERVAL_MS)
  timer.unref()
  return { stop: () => clearInterval(timer) }
}

/**
 * Go on capping `paths` in a process of their own until the QEMU `pid` (whose argv names `vmDir`)
 * is gone: for a VM that outlives this process (Sandbox.detach), whose guest still writes.
 * Returns the keeper's pid.
 */
export function capLogsDetached(pid: number, vmDir: string, paths: string[]): number | undefined {
  const child = spawn(process.execPath, [entryScript('vmm/log-cap-main'), String(pid), vmDir, ...paths], { detached: true, stdio: 'ignore' })
  child.on('error', () => undefined)
  child.unref()
  return child.pid
}
