import type { Duplex, Readable, Writable } from 'node:stream'
import type { SpawnUser } from '../wire/messages.js'

export interface SpawnOptions {
  env?: Record<string, string>
  /** Working directory in the guest (default: the user's home). */
  cwd?: string
  /**
   * `agent` (default), `root`, or a numeric `{ uid, gid }` (uid 0 is refused: ask for `root` by
   * name). Anything but the agent's own user needs a root agent (bootstrap 'ssh': agentd starts
   * the agent as `agent`). A switched-to process has no supplementary groups; a numeric one gets
   * its HOME and USER from the guest's /etc/passwd when that lists the uid (HOME `/` otherwise).
   */
  user?: SpawnUser
  /**
   * Start the process with no_new_privs (through the guest's `setpriv --no-new-privs`): setuid
   * programs such as sudo, and file capabilities, cannot give it or its children more privileges.
   * Fails with an AGENT error when the guest has no `setpriv` (util-linux or busybox).
   */
  noNewPrivs?: boolean
  /**
   * Its nice value, -20..19, set by the agent as the process starts (default: the agent's, 0).
   * `GuestProcess.renice` changes it later; only a root agent can lower it again.
   */
  nice?: number
  /**
   * A worker (a root agent's): the process starts in a cgroup (v2) of its own before its program
   * runs, and nothing it starts can leave it without root. `AgentClient.sweepWorkers` kills what
   * workers left there. On a guest without cgroup2 a non-root worker starts without one, and a
   * worker running as root fails to start (AGENT error naming the cause).
   */
  worker?: boolean
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
  /** Set its nice value (-20..19) on every thread; going below its current value needs a root agent. */
  renice(nice: number): Promise<void>
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
