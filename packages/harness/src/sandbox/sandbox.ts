import type { Arch, SandboxOptionsInput } from '../config/options.js'
import { bootSandbox, type BootHooks } from './boot.js'
import type { Transport } from '../control/transport.js'
import type { QemuExit, QemuProcess } from '../vmm/qemu-process.js'
import type { QmpClient } from '../vmm/qmp.js'
import type { Accel } from '../vmm/profile.js'
import { markKept, removeVmDir } from '../vmm/vm-dir.js'
import { StereosdClient } from '../control/client.js'
import { stopVm, type StoppedBy } from './shutdown.js'
import type { TimelineEntry } from './timeline.js'

export interface SandboxInfo {
  id: string
  arch: Arch
  accel: Accel
  /** Why KVM was not used, when it was not. */
  accelNote: string | undefined
  mixtape: { ref: string; dir: string; version: string | undefined }
  /** How the host reaches stereosd. */
  transport: { kind: 'tcp'; host: string; port: number } | { kind: 'vsock'; cid: number; port: number }
  /** Host ports forwarded to the guest (127.0.0.1 only). */
  ports: { ssh: number | undefined; control: number | undefined }
  vmDir: string
  pid: number
  /** When each boot phase finished, in ms since Sandbox.boot was called. */
  timeline: TimelineEntry[]
}

export interface SandboxLogs {
  /** QEMU's own stdout/stderr, appended across boots. */
  qemu: string
  /** The guest's serial console. */
  serial: string
}

export interface SshAccess {
  host: '127.0.0.1'
  port: number
  user: 'admin'
  /** OpenSSH private key for `ssh -i`; its public half was injected with inject_ssh_key. */
  keyPath: string
}

export interface ShutdownOptions {
  /** Time each graceful step gets before the next (default 30 s, as `mb down`). */
  timeoutMs?: number
  reason?: string
}

export interface ShutdownReport {
  stoppedBy: StoppedBy
  exit: QemuExit
  /** The VM dir when it was kept (keepOnFailure and a forced stop), else undefined. */
  keptDir: string | undefined
}

export interface SandboxParts {
  info: SandboxInfo
  logs: SandboxLogs
  ssh: SshAccess | undefined
  control: StereosdClient
  transport: Transport
  qemu: QemuProcess
  qmp: () => Promise<QmpClient>
  keepOnFailure: boolean
  log: (line: string) => void
}

/** A booted, provisioned VM. Stop it with shutdown() or `await using`. */
export class Sandbox implements AsyncDisposable {
  readonly info: SandboxInfo
  readonly logs: SandboxLogs
  readonly ssh: SshAccess | undefined
  private current: StereosdClient
  private stopping: Promise<ShutdownReport> | undefined

  constructor(private readonly parts: SandboxParts) {
    this.info = parts.info
    this.logs = parts.logs
    this.ssh = parts.ssh
    this.current = parts.control
  }

  /** The stereosd client; reconnects if the previous connection closed. */
  get control(): StereosdClient {
    return this.current
  }

  /** A live stereosd connection (opens a new one when the current one has closed). */
  async connect(): Promise<StereosdClient> {
    if (this.current.closed) this.current = await StereosdClient.open(this.parts.transport)
    return this.current
  }

  /** Settles when QEMU exits, for whatever reason. */
  get exited(): Promise<QemuExit> {
    return this.parts.qemu.exited
  }

  /** Stop the VM (control plane → QMP powerdown → SIGTERM → SIGKILL) and remove its directory. */
  shutdown(options: ShutdownOptions = {}): Promise<ShutdownReport> {
    this.stopping ??= this.stop(options)
    return this.stopping
  }

  /** Boot a VM from options (see SandboxOptions), wait for stereosd, provision it. */
  static boot(options: SandboxOptionsInput = {}, hooks?: BootHooks): Promise<Sandbox> {
    return bootSandbox(options, hooks)
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.shutdown()
  }

  private async stop(options: ShutdownOptions): Promise<ShutdownReport> {
    const { parts } = this
    const stoppedBy = await stopVm({
      qemu: parts.qemu,
      control: () => this.connect(),
      qmp: parts.qmp,
      timeoutMs: options.timeoutMs ?? 30_000,
      reason: options.reason ?? 'stereos-harness shutdown',
      log: parts.log,
    })
    const exit = await parts.qemu.exited
    this.current.close()
    await parts.qmp().then((qmp) => qmp.close(), () => undefined)
    const forced = stoppedBy === 'sigterm' || stoppedBy === 'sigkill'
    if (forced && parts.keepOnFailure) {
      markKept(this.info.vmDir, `shutdown needed ${stoppedBy}`)
      return { stoppedBy, exit, keptDir: this.info.vmDir }
    }
    removeVmDir(this.info.vmDir)
    return { stoppedBy, exit, keptDir: undefined }
  }
}
