import type { Identity } from './test-user.js'
import {
  type CaptureOptions,
  type CaptureReport,
  type ExecOptions,
  type ExecResult,
  type GuestProcess,
  type KeptVm,
  keepVm,
  type Sandbox,
  type SandboxInfo,
  type SpawnOptions,
} from '@stereos/harness'

/** What the pool does with a guest process: a GuestProcess is one. */
export type PoolProcess = Pick<GuestProcess, 'pid' | 'stdin' | 'stdout' | 'stderr' | 'ipc' | 'exited' | 'kill' | 'renice'>

/**
 * What the pool asks of a VM, and nothing more: a lease, a guest worker, the project view, the
 * logs of a failure, a kept VM. `poolVm(sandbox)` makes one of a booted Sandbox; unit tests
 * write their own without casts.
 */
export interface PoolVm {
  readonly info: Pick<SandboxInfo, 'id' | 'pid' | 'arch' | 'accel' | 'timeline' | 'mixtape'>
  readonly logs: { readonly serial: string; readonly qemu: string }
  readonly running: boolean
  /** Who the guest's test processes run as (test-user.ts); the project view is theirs. */
  readonly testUser: Identity
  readonly exited: Promise<{ code: number | undefined; signal: string | undefined }>
  /** The guest Node the agent runs on (worker processes use it too). */
  guestNode(): Promise<string>
  spawn(cmd: string, args: string[], options: SpawnOptions): Promise<PoolProcess>
  exec(cmd: string, args: string[], options: ExecOptions): Promise<Pick<ExecResult, 'exitCode' | 'stdout' | 'stderr'>>
  readFile(path: string, options: { maxBytes?: number }): Promise<Buffer>
  /**
   * Kill what earlier worker processes left in the guest, keeping `keepPid`'s: everything in the
   * other workers' cgroups, whatever its uid (root's too), and for a non-root `uid` every process
   * of it outside `keepPid`'s tree (workers on a guest without cgroup2 have no cgroup).
   */
  sweep(uid: number, keepPid: number): Promise<void>
  shutdown(options?: { timeoutMs?: number }): Promise<unknown>
  /** Take the VM out of the harness's hands, running, for `stereos-harness ssh` (keepVm). */
  keep(reason: string): KeptVm
  /** Save the VM into one file (capture 'on-failure'); its QEMU ends with it. */
  capture(path: string, options: CaptureOptions): Promise<Pick<CaptureReport, 'path' | 'bytes' | 'ram' | 'timings'>>
}

export function poolVm(sandbox: Sandbox, testUser: Identity): PoolVm {
  return {
    testUser,
    get info() {
      return sandbox.info
    },
    get logs() {
      return sandbox.logs
    },
    get running() {
      return sandbox.running
    },
    get exited() {
      return sandbox.exited
    },
    guestNode: async () => (await sandbox.agent()).info.execPath,
    spawn: (cmd, args, options) => sandbox.spawn(cmd, args, options),
    exec: (cmd, args, options) => sandbox.exec(cmd, args, options),
    readFile: (path, options) => sandbox.readFile(path, options),
    sweep: async (uid, keepPid) => {
      const agent = await sandbox.agent()
      await agent.sweepWorkers(keepPid)
      // uid 0 is the agent's own: only the cgroups can tell a root worker's leftovers.
      if (uid !== 0) await agent.sweep(uid, keepPid)
    },
    shutdown: (options) => sandbox.shutdown(options),
    keep: (reason) => keepVm(sandbox, reason),
    capture: (path, options) => sandbox.capture(path, options),
  }
}
