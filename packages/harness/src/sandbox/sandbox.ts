import type { SandboxOptionsInput } from '../config/options.js'
import { planBoot, type BootPlan } from '../config/plan.js'
import { bootSandbox, type BootHooks } from './boot.js'
import type { QemuExit } from '../vmm/qemu-process.js'
import { capLogsDetached } from '../vmm/log-cap.js'
import { markKept, removeVmDir } from '../vmm/vm-dir.js'
import { StereosdClient } from '../control/client.js'
import { stopVm, type StoppedBy } from './shutdown.js'
import type { SandboxInfo, SandboxLogs, SandboxParts, SshAccess } from './parts.js'
import type { GuestAgent } from './agent-start.js'
import { AgentClient } from '../agent-client/client.js'
import type { CopyOptions, CopyReport, ReadFileOptions, WriteFileOptions } from '../agent-client/files.js'
import type { ExecBufferResult, ExecOptions, ExecResult, GuestProcess, SpawnOptions } from '../agent-client/process.js'
import { HarnessError, isHarnessError } from '../errors.js'
import type { GuestStat } from '../wire/messages.js'
import { captureVm, type CaptureOptions, type CaptureReport } from '../capture/save.js'

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

/** A booted, provisioned VM. Stop it with shutdown() or `await using`. */
export class Sandbox implements AsyncDisposable {
  readonly info: SandboxInfo
  readonly logs: SandboxLogs
  readonly ssh: SshAccess | undefined
  private current: StereosdClient
  private agentClient: AgentClient | undefined
  /** The reconnect (or restart) in progress, shared by concurrent callers. */
  private agentConnecting: Promise<AgentClient> | undefined
  private agentRestarted = false
  private stopping: Promise<ShutdownReport> | undefined
  private detached = false
  /** Set by capture(): the guest's agent, keys and secrets are gone. */
  private captured: Promise<CaptureReport> | undefined

  constructor(private readonly parts: SandboxParts) {
    this.info = parts.info
    this.logs = parts.logs
    this.ssh = parts.ssh
    this.current = parts.control
    this.agentClient = parts.agent?.client
  }

  /**
   * The guest agent's connection. A closed one is reopened; when nothing answers any more while
   * QEMU runs (the agent died: agentd does not restart a native agent whose command ended), the
   * agent is started again, once per sandbox, with a log line.
   */
  async agent(): Promise<AgentClient> {
    const agent = this.parts.agent
    if (!agent) {
      throw new HarnessError('AGENT', 'this sandbox was booted with bootstrap: none, so it has no guest agent', {
        fix: "boot with bootstrap: 'agentd' (the default) or 'ssh'",
      })
    }
    if (this.stopping) throw new HarnessError('AGENT_UNREACHABLE', `sandbox ${this.info.id} is shutting down`)
    if (this.captured)
      throw new HarnessError('AGENT_UNREACHABLE', `sandbox ${this.info.id} was captured: its agent, SSH keys and secrets were removed`, {
        fix: 'shut it down; open the capture with `stereos-harness debug <capture>`',
      })
    if (this.agentClient && !this.agentClient.closed) return this.agentClient
    this.agentConnecting ??= this.withLogs(() => this.reconnect(agent)).finally(() => (this.agentConnecting = undefined))
    this.agentClient = await this.agentConnecting
    return this.agentClient
  }

  private async reconnect(agent: GuestAgent): Promise<AgentClient> {
    try {
      return await AgentClient.connect(agent.transport, agent.token, 10_000)
    } catch (err) {
      // A refused token or a foreign protocol is not a lost agent; a second loss is not retried.
      const lost = !isHarnessError(err, 'AGENT_AUTH') && !isHarnessError(err, 'PROTOCOL') && this.running
      if (!lost || this.agentRestarted) throw err
      this.agentRestarted = true
      const how = agent.bootstrap === 'agentd' ? 'through agentd (set_config with a changed [[agents]] entry)' : 'over SSH'
      this.parts.log(
        `sandbox ${this.info.id}: the guest agent stopped answering (${(err as Error).message.split('\n')[0]}); starting it again ${how}, once per sandbox`,
      )
      return agent.restart(() => this.connect())
    }
  }

  /** Run a command in the guest to completion; a non-zero exit code is a result, not an error. */
  exec(cmd: string, args: string[] = [], options?: ExecOptions): Promise<ExecResult> {
    return this.withAgent((agent) => agent.exec(cmd, args, options))
  }

  /** exec with stdout and stderr as Buffers. */
  execBuffer(cmd: string, args: string[] = [], options?: ExecOptions): Promise<ExecBufferResult> {
    return this.withAgent((agent) => agent.execBuffer(cmd, args, options))
  }

  /**
   * Start a guest process and stream its stdio (flow-controlled, binary-safe). `options.user`
   * may be a numeric `{ uid, gid }`, `noNewPrivs` starts it under no_new_privs and `nice` sets its
   * priority (see SpawnOptions); `renice` on the result changes that later.
   */
  spawn(cmd: string, args: string[] = [], options?: SpawnOptions): Promise<GuestProcess> {
    return this.withAgent((agent) => agent.spawn(cmd, args, options))
  }

  writeFile(path: string, data: string | Uint8Array, options?: WriteFileOptions): Promise<void> {
    return this.withAgent((agent) => agent.writeFile(path, data, options))
  }

  /** Read a guest file into memory; over `maxBytes` (default 64 MiB) it is refused (copyOut streams large files). */
  readFile(path: string, options?: ReadFileOptions): Promise<Buffer> {
    return this.withAgent((agent) => agent.readFile(path, options))
  }

  /** Copy a host file or tree into the guest; content the guest already holds is not sent again. */
  copyIn(hostPath: string, guestPath: string, options?: CopyOptions): Promise<CopyReport> {
    return this.withAgent((agent) => agent.copyIn(hostPath, guestPath, options))
  }

  /** Copy a guest file or tree to the host. */
  copyOut(guestPath: string, hostPath: string): Promise<CopyReport> {
    return this.withAgent((agent) => agent.copyOut(guestPath, hostPath))
  }

  stat(path: string): Promise<GuestStat | null> {
    return this.withAgent((agent) => agent.stat(path))
  }

  private async withAgent<T>(fn: (agent: AgentClient) => Promise<T>): Promise<T> {
    const agent = await this.agent()
    return this.withLogs(() => fn(agent))
  }

  /** A lost agent connection names the logs that say why (agent crash, kernel panic, QEMU gone). */
  private async withLogs<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn()
    } catch (err) {
      if (!isHarnessError(err, 'AGENT_UNREACHABLE')) throw err
      const qemuGone = this.parts.qemu.exit !== undefined
      const what = qemuGone ? 'QEMU has exited' : 'the guest agent stopped answering (crashed or was killed?)'
      throw new HarnessError('AGENT_UNREACHABLE', `${err.message.split('\n')[0]}: ${what}`, {
        fix: `read ${this.logs.serial} (the agent logs there) and ${this.logs.qemu}`,
        logs: { serial: this.logs.serial, qemu: this.logs.qemu },
        cause: err,
      })
    }
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

  /** False once QEMU has exited. */
  get running(): boolean {
    return this.parts.qemu.exit === undefined
  }

  /** Settles when QEMU exits, for whatever reason. */
  get exited(): Promise<QemuExit> {
    return this.parts.qemu.exited
  }

  /**
   * Leave the VM running after this process exits (booted with `detachable: true`): connections
   * close, the VM dir is marked kept (orphan sweeps leave it), and neither QEMU nor what this
   * process runs beside it (a private namespace's host forwards and slirp4netns egress) holds
   * this process open. Those end when it exits: the guest keeps its relay sockets (ssh, the agent)
   * but loses outbound network and network.forwards. Stop it later with
   * `stereos-harness stop <id>` (or kill its pid and remove the dir).
   */
  detach(reason: string): void {
    if (!this.parts.detachable) {
      throw new HarnessError('INVALID_OPTIONS', `sandbox ${this.info.id} was not booted detachable, so its QEMU dies with this process`, {
        fix: 'boot with detachable: true to keep a VM beyond this process',
      })
    }
    markKept(this.info.vmDir, reason)
    // The in-process caps end with this process; the guest goes on writing to its console.
    capLogsDetached(this.info.pid, this.info.vmDir, [this.logs.serial, this.logs.qemu])
    this.agentClient?.close()
    this.current.close()
    void this.parts.qmp().then(
      (qmp) => qmp.close(),
      () => undefined,
    )
    this.parts.qemu.unref()
    this.detached = true
  }

  /**
   * Save this VM into one file at `path` (README "Capturing a failing VM"): RAM and device
   * state, the disk as a delta over the mixtape's image (by digest), the logs and a manifest
   * (with `options.context`). First the guest loses what the host gave it: stereosd's secrets,
   * the agent (it holds the token) and the SSH keys; the saved RAM and disk are then searched for
   * each value, and what still holds one is left out (said in the manifest and in one log line).
   * QEMU quits once the VM is saved (a failed save leaves it running); shutdown() removes its dir. Reopen the file with
   * `stereos-harness debug <path>`. Once per sandbox.
   */
  capture(path: string, options?: CaptureOptions): Promise<CaptureReport> {
    if (this.stopping || this.detached || !this.running)
      return Promise.reject(new HarnessError('CAPTURE', `sandbox ${this.info.id} is not running, so it cannot be captured`))
    if (this.captured) return Promise.reject(new HarnessError('CAPTURE', `sandbox ${this.info.id} was captured already`))
    const { parts } = this
    // The agent is killed by the scrub, not told to go: a connection it sees close would end what
    // the tests left running (its workers' cgroups), and the capture would lose it.
    this.captured = captureVm(
      { source: parts.capture, vmDir: this.info.vmDir, logs: this.logs, qmp: parts.qmp, running: () => this.running, log: parts.log },
      path,
      options,
    ).finally(() => this.agentClient?.close())
    return this.captured
  }

  /** Stop the VM (control plane → QMP powerdown → SIGTERM → SIGKILL) and remove its directory. */
  shutdown(options: ShutdownOptions = {}): Promise<ShutdownReport> {
    if (this.detached)
      return Promise.reject(
        new HarnessError('INVALID_OPTIONS', `sandbox ${this.info.id} was detached and keeps running`, {
          fix: `stop it with \`stereos-harness stop ${this.info.id}\``,
        }),
      )
    this.stopping ??= this.stop(options)
    return this.stopping
  }

  /**
   * Boot a VM from options (see SandboxOptions; parsed here) or a plan made of them (planBoot;
   * taken as it is), wait for stereosd, provision it, start its agent. Resolves once everything
   * the Sandbox reports is usable.
   */
  static async boot(options: SandboxOptionsInput | BootPlan = {}, hooks?: BootHooks): Promise<Sandbox> {
    return new Sandbox(await bootSandbox(planBoot(options), hooks))
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.shutdown()
  }

  private async stop(options: ShutdownOptions): Promise<ShutdownReport> {
    const { parts } = this
    this.agentClient?.close()
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
    await parts.qmp().then(
      (qmp) => qmp.close(),
      () => undefined,
    )
    const forced = stoppedBy === 'sigterm' || stoppedBy === 'sigkill'
    if (forced && parts.keepOnFailure) {
      markKept(this.info.vmDir, `shutdown needed ${stoppedBy}`)
      return { stoppedBy, exit, keptDir: this.info.vmDir }
    }
    removeVmDir(this.info.vmDir)
    return { stoppedBy, exit, keptDir: undefined }
  }
}
