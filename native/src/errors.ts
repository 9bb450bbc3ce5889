import { constants } from 'node:os'
import { getSystemErrorName } from 'node:util'

/** Positive errno values by name (ECONNREFUSED → 111 on Linux). */
export const E = constants.errno

/** An Error as Node's own system calls make them: `code`, `errno` (negative), `syscall`. */
export interface ErrnoError extends Error {
  code: string
  errno: number
  syscall: string
  path?: string
  cid?: number
  port?: number
}

const DESCRIPTIONS: Partial<Record<string, string>> = {
  ECONNREFUSED: 'connection refused',
  ETIMEDOUT: 'connection timed out',
  ENODEV: 'no vsock transport reaches this CID',
  EADDRINUSE: 'address already in use',
  EACCES: 'permission denied',
  EAFNOSUPPORT: 'AF_VSOCK is not supported (vsock kernel module not loaded)',
  ECONNRESET: 'connection reset by peer',
  EPIPE: 'broken pipe',
  ENOENT: 'no such file or directory',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
}

/** Error name for a negative (or positive) errno, e.g. -111 → 'ECONNREFUSED'. */
export function errnoName(errno: number): string {
  try {
    return getSystemErrorName(-Math.abs(errno))
  } catch {
    return `E${Math.abs(errno)}`
  }
}

/**
 * errnoError(-111, 'connect', { cid: 3, port: 1024 }) →
 * Error('connect ECONNREFUSED vsock 3:1024 (connection refused)') with code/errno/syscall/cid/port.
 */
export function errnoError(errno: number, syscall: string, where: { cid?: number; port?: number; path?: string; detail?: string } = {}): ErrnoError {
  const code = errnoName(errno)
  let message = `${syscall} ${code}`
  if (where.path !== undefined) message += ` ${where.path}`
  if (where.cid !== undefined) message += ` vsock ${where.cid}:${where.port ?? '*'}`
  const description = where.detail ?? DESCRIPTIONS[code]
  if (description) message += ` (${description})`
  const err = new Error(message) as ErrnoError
  err.code = code
  err.errno = -Math.abs(errno)
  err.syscall = syscall
  if (where.path !== undefined) err.path = where.path
  if (where.cid !== undefined) err.cid = where.cid
  if (where.port !== undefined) err.port = where.port
  return err
}
