import { closeSync, openSync } from 'node:fs'
import { execa } from 'execa'
import { HarnessError } from '../errors.js'
import { logTailLines } from '../host/log-tail.js'
import { which } from '../host/which.js'
import { netnsCommand, type RelayForward } from './network/netns.js'

export interface QemuExit {
  code: number | undefined
  signal: string | undefined
}

export interface QemuProcess {
  pid: number
  /** Settles when QEMU has exited, however that happened. */
  exited: Promise<QemuExit>
  /** undefined while QEMU runs. */
  exit: QemuExit | undefined
  kill(signal: NodeJS.Signals): void
  /** Stop waiting for QEMU: this process may exit while it runs (detachable QEMUs only outlive it). */
  unref(): void
}

export interface SpawnQemuOptions {
  binary: string
  argv: string[]
  qemuLog: string
  /**
   * Our fds the child gets as 3, 4, ... (execa stdio indexes); QEMU refers to them by those
   * numbers (`vhostfd=3`). Passing through stdio dup2()s them into place, which clears
   * close-on-exec on the child's copy only, so they survive setpriv's exec into QEMU while our
   * own O_CLOEXEC fds still leak into no other child.
   */
  fds?: number[]
  /** Start QEMU in a private network namespace with the forward relay beside it (vmm/network/netns.ts). */
  netns?: { userns: boolean; relay: RelayForward[] }
  /** QEMU may outlive this process: no --pdeathsig, its own process group, no exit cleanup. */
  detachable?: boolean
}

const INSTALL_HINT: Record<string, string> = {
  'qemu-system-x86_64': 'apt-get install qemu-system-x86',
  'qemu-system-aarch64': 'apt-get install qemu-system-arm',
}

/**
 * Start QEMU as our child, with stdout/stderr appended to qemu.log (a crash log survives a
 * retry, as in mb). `setpriv --pdeathsig KILL` makes the kernel kill QEMU when we die, even by
 * SIGKILL, so a crashed runner never leaks a VM.
 */
export function spawnQemu(options: SpawnQemuOptions): QemuProcess {
  const binary = requireQemu(options.binary)
  const { file, args } = launchCommand(binary, options)
  // qemu.log is handed over as a plain fd, not a pipe execa copies into the file: with a pipe,
  // "exited" would wait for every process holding its write end (the netns relay, or anything
  // QEMU's wrapper started), and a rollback's kill could wait forever on an orphan.
  const log = openSync(options.qemuLog, 'a', 0o600)
  // execa's cleanup kills QEMU on a normal exit of this process; pdeathsig covers the rest.
  // execa 10.2's types allow no integer fd in stdio, but its runtime hands such 'native' items
  // to child_process.spawn unchanged (an fd is inherited like 'inherit' is); test/qemu-fds.test.ts
  // pins that behaviour.
  const stdio = ['ignore', log, log, ...(options.fds ?? [])] as unknown as ['ignore', 'inherit', 'inherit']
  const detached = options.detachable === true
  let child: ReturnType<typeof execa>
  try {
    child = execa(file, args, { stdio, reject: false, cleanup: !detached, detached })
  } finally {
    closeSync(log)
  }
  const pid = child.pid
  if (pid === undefined) {
    throw new HarnessError('QEMU_EXITED', `QEMU could not be started: ${tail(options.qemuLog)}`)
  }
  const handle: QemuProcess = {
    pid,
    exit: undefined,
    exited: child.then((result) => {
      handle.exit = { code: result.exitCode, signal: result.signal }
      return handle.exit
    }),
    unref() {
      // execa's promise wraps Node's ChildProcess, which is what holds this process open.
      ;(child as unknown as { nodeChildProcess: { unref(): void } }).nodeChildProcess.unref()
    },
    kill(signal) {
      if (handle.exit) return
      try {
        process.kill(pid, signal)
      } catch {
        // gone between the check and the kill
      }
    },
  }
  return handle
}

/** setpriv → QEMU, or (private network namespace) unshare → sh → setpriv → QEMU, all one PID. */
function launchCommand(binary: string, options: SpawnQemuOptions): { file: string; args: string[] } {
  if (options.netns)
    return netnsCommand({ binary, argv: options.argv, forwards: options.netns.relay, userns: options.netns.userns, pdeathsig: !options.detachable })
  const setpriv = options.detachable ? undefined : which('setpriv')
  return setpriv ? { file: setpriv, args: ['--pdeathsig', 'KILL', '--', binary, ...options.argv] } : { file: binary, args: options.argv }
}

/** Absolute path of a QEMU binary, or a QEMU_NOT_FOUND error that names the package to install. */
export function requireQemu(name: string): string {
  const binary = which(name)
  if (binary) return binary
  const hint = INSTALL_HINT[name] ?? 'install QEMU or correct the qemuBinary option'
  throw new HarnessError('QEMU_NOT_FOUND', `QEMU binary ${name} was not found on PATH`, {
    fix: `${hint} (or run \`stereos-harness doctor\` to see what is missing)`,
  })
}

/**
 * The last lines of a log, for error messages: read from a bounded suffix of the file (a guest
 * can make its console log as large as it likes).
 */
export function tail(path: string, lines = 15): string {
  return logTailLines(path, lines)
}
