import { closeSync, fstatSync, openSync, readSync } from 'node:fs'

/**
 * How much of a log any tail reads by default: a guest writes its console (serial.log) and can
 * make it huge, so no reader loads more than a suffix of it.
 */
export const LOG_TAIL_MAX_BYTES = 256 * 1024

/**
 * The last `maxBytes` bytes of a host file (empty when it is missing or unreadable). It seeks to
 * the end and reads at most `maxBytes`, so the file's size never decides how much memory it takes.
 */
export function readLogTail(path: string, maxBytes = LOG_TAIL_MAX_BYTES): Buffer {
  return suffix(path, maxBytes) ?? Buffer.alloc(0)
}

/**
 * The last `lines` lines of a log, for error messages, from at most `maxBytes` of its end:
 * '(missing)' when there is no such file, '(empty)' when it holds nothing.
 */
export function logTailLines(path: string, lines = 15, maxBytes = 64 * 1024): string {
  const bytes = suffix(path, maxBytes)
  if (bytes === undefined) return '(missing)'
  const text = bytes.toString('utf8').trimEnd()
  return text ? text.split('\n').slice(-lines).join('\n') : '(empty)'
}

function suffix(path: string, maxBytes: number): Buffer | undefined {
  let fd: number
  try {
    fd = openSync(path, 'r')
  } catch {
    return undefined
  }
  try {
    return readFdTail(fd, maxBytes)
  } catch {
    return Buffer.alloc(0)
  } finally {
    closeSync(fd)
  }
}

/** The last `maxBytes` bytes of an open file (positioned reads: the fd's offset is not used). */
export function readFdTail(fd: number, maxBytes: number): Buffer {
  const size = fstatSync(fd).size
  const length = Math.max(0, Math.min(size, Math.floor(maxBytes)))
  const bytes = Buffer.alloc(length)
  let read = 0
  // The file may shrink meanwhile (a cap truncates it): stop at its end, keep what was read.
  while (read < length) {
    const n = readSync(fd, bytes, read, length - read, size - length + read)
    if (n === 0) break
    read += n
  }
  return bytes.subarray(0, read)
}
