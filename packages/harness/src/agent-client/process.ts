import type { Duplex, Readable, Writable } from 'node:stream'
import type { GuestUser } from '../wire/messages.js'

export interface SpawnOptions {
  env?: Record<string, string>
  /** Working directory in the guest (default: the user's home). */
  cwd?: string
  /** `agent` (default) or `root` (needs bootstrap 'ssh': agentd starts the agent as `agent`). */
  user?: GuestUser
  /** Give the process a stdin stream (default false: stdin is /dev/null). */
  stdin?: boolean
  /**
   * An extra bidirectional pipe on the guest process's fd 3, surfaced as `ipc`: a raw byte
   * channel, e.g. for an RPC protocol between the host and the guest process.
   */
  ipc?: boolean
}

export interface ProcessExit {
  exitCode: number | null
  signal: string | null
}

/** A process running in the guest; its streams are flow-controlled channels of the agent connection. */
export interface GuestProcess {
  readonly pid: number
  readonly stdin: Writable | null
  readonly stdout: Readable
  readonly stderr: Readable
  readonly ipc: Duplex | null
  /** Settles when the process has exited (output may still be in flight on stdout/stderr). */
  readonly exited: Promise<ProcessExit>
  kill(signal?: NodeJS.Signals): Promise<void>
}

export interface ExecOptions extends Omit<SpawnOptions, 'stdin' | 'ipc'> {
  /** Bytes written to the process's stdin, which is then closed. */
  input?: string | Uint8Array
  /** Kill the process (SIGKILL) and reject if it runs longer. */
  timeoutMs?: number
  /** Reject (and kill the process) when stdout or stderr exceeds this many bytes (default 512 MiB). */
  maxBuffer?: number
}

export interface ExecResult extends ProcessExit {
  stdout: string
  stderr: string
}

export interface ExecBufferResult extends ProcessExit {
  stdout: Buffer
  stderr: Buffer
}
