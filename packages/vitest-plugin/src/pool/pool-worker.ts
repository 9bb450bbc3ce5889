import { EventEmitter } from 'node:events'
import { fileURLToPath } from 'node:url'
import { HarnessError, keepVm, tail, type GuestProcess } from '@stereos/harness'
import { encodeV8, V8Decoder } from '@stereos/harness/wire'
import type { PoolOptions, PoolTask, PoolWorker, WorkerRequest } from 'vitest/node'
import { failedSuitesIn, failedTestsIn, vmLogAnnotations, vmLogError } from './artifacts.js'
import { Boundary } from './boundary.js'
import { failedFileCalls, failedFileTask, fileHashOf, serializeError } from './failed-file.js'
import type { FilePlan, PoolContext } from './context.js'
import { type Call, RpcFirewall, type WorkerResponse } from './firewall/firewall.js'
import { guestEnv } from './guest-env.js'
import type { UpdateMode } from './host-writes.js'
import type { Lease } from './lease-pool.js'
import { InspectorForward, type InspectorConfig } from './inspector.js'
import { ensureGuestDir, forgetCachedReads, GUEST_HOME, hostIdentity } from './view.js'
import type { WorkerSpec } from './warm-workers.js'
import { vitestMajor } from '../version.js'

const GUEST_ENTRY = fileURLToPath(new URL('../guest/worker-entry.js', import.meta.url))

type Request = WorkerRequest & { type: string; context?: { files?: { filepath: string }[] } }

function isRequest(message: unknown): message is Request {
  return typeof message === 'object' && message !== null && (message as { __vitest_worker_request__?: boolean }).__vitest_worker_request__ === true
}

const response = (type: 'started' | 'stopped') => ({ __vitest_worker_response__: true, type })

/** One message from a guest worker: a big file's collected task tree fits; a runaway one does not. */
const MAX_GUEST_MESSAGE = 64 * 1024 ** 2
/** Messages from one guest worker waiting for the host before its channel is paused. */
const MAX_QUEUED_MESSAGES = 1000

/**
 * Where one PoolWorker is. Vitest drives it start → run… → stop; the VM is only chosen at the
 * first `run` (its file's describe.sandbox options pick the VM), so `start` is answered here.
 * - idle: no guest process yet;
 * - launching: leasing a VM and spawning the guest process; frames from Vitest queue behind it;
 * - running: frames flow both ways;
 * - dead: the guest process or its VM died; Vitest got one error and nothing is sent on;
 * - stopped: stop() ran; the VM went back to the pool (or was discarded).
 */
type State =
  | { kind: 'idle' }
  | { kind: 'launching'; launched: Promise<void> }
  | { kind: 'running'; lease: Lease; child: GuestProcess }
  | { kind: 'dead'; lease: Lease | undefined }
  | { kind: 'stopped' }

/**
 * One Vitest PoolWorker: a fresh guest Node process running Vitest's worker, in a VM leased
 * from the pool, with every frame between them checked on the way: module fetches confined to
 * the project view, attachments read from the guest, writes to the host only through the
 * snapshot channel, VM logs added to failed tests.
 */
export class StereosPoolWorker implements PoolWorker {
  readonly name = 'stereos'
  private readonly events = new EventEmitter()
  private state: State = { kind: 'idle' }
  private lease: Lease | undefined
  private plan: FilePlan | undefined
  private startRequest: Request | undefined
  /** Frames to the guest, in order, each after the launch. */
  private outbound: Promise<void> = Promise.resolve()
  /** Frames from the guest, in order (some wait for the host: attachments, annotations). */
  private inbound: Promise<void> = Promise.resolve()
  /** Vitest sent `stop` and has not had `stopped` yet. */
  private stopPending = false
  /** stop() began: the guest going away now is expected. */
  private stopping = false
  /** Vitest's RPC with the guest: only allowlisted calls pass, under the pool's ids, and every answer is checked. */
  private readonly firewall: RpcFirewall
  /** What crosses from the guest to the host, checked. */
  private readonly boundary: Boundary
  private inspector: InspectorForward | undefined
  /** A test or the file failed in this worker's VM (keepVm keeps such a VM). */
  private failed = false
  private files: string[] = []

  constructor(
    private readonly options: PoolOptions,
    private readonly ctx: PoolContext,
  ) {
    const config = options.project.config as { snapshotOptions?: { updateSnapshot?: UpdateMode } }
    this.firewall = new RpcFirewall({
      viewRoots: ctx.view.roots,
      vitestMajor: vitestMajor(options.project.vitest.version),
      toVitest: (call) => this.events.emit('message', call),
      toGuest: (reply) => this.toGuest(reply),
      // The reason names what the guest sent: printable characters only, one bounded line.
      refused: (why) =>
        options.project.vitest.logger.error(
          `stereos: refused from the guest worker of ${this.files.join(', ') || 'a test file'}: ${why.replace(/[^\x20-\x7e]/g, '?').slice(0, 300)}`,
        ),
    })
    this.boundary = new Boundary({
      viewRoots: ctx.view.roots,
      projectRoot: ctx.projectRoot,
      update: config.snapshotOptions?.updateSnapshot,
      snapshotFiles: this.firewall.snapshotFiles,
      coverageDir: () => this.coverageDir(),
      guestFilesDir: () => ctx.guestFilesDir(),
    })
  }

  on(event: string, callback: (...args: any[]) => void): void {
    this.events.on(event, callback)
  }

  off(event: string, callback: (...args: any[]) => void): void {
    this.events.off(event, callback)
  }

  deserialize(data: unknown): unknown {
    return data
  }

  async start(): Promise<void> {
    // The VM is picked on the first `run`; see State.
  }

  send(message: WorkerRequest): void {
    const m = message as unknown
    const request = isRequest(m) ? m : undefined
    if (request?.type === 'start') {
      this.startRequest = request
      setImmediate(() => this.events.emit('message', response('started')))
      return
    }
    // Nothing in the guest can answer `stop` when there is no process (or it is going: Vitest 4
    // may close the pool, and so the VMs, before it stops its workers).
    if (request?.type === 'stop' && (this.state.kind === 'idle' || this.state.kind === 'dead' || this.ctx.pool.closing)) {
      setImmediate(() => this.events.emit('message', response('stopped')))
      return
    }
    // Answers to guest calls come back checked, under the guest's id; the pool's own end here.
    const out = this.firewall.fromVitest(m)
    if (out === undefined) return
    if (request?.type === 'stop') this.stopPending = true
    if (request?.type === 'run' || request?.type === 'collect') {
      const files = (request.context?.files ?? []).map((f) => f.filepath)
      this.firewall.sent(files)
      // isolate: false: Vitest hands a running worker more files (canReuse said yes).
      if (this.state.kind === 'running') this.count(files)
      if (this.state.kind === 'idle') {
        const method = request.type === 'collect' ? 'collect' : 'run'
        // A file whose VM cannot be had fails as a file (with the reason), not as the worker.
        const launched = this.launch(files).catch((err: unknown) => this.reportUnusable(files, method, err))
        this.state = { kind: 'launching', launched }
      }
    }
    const launched = this.state.kind === 'launching' ? this.state.launched : undefined
    // Watch mode: the host changed files since the VM cached them; the guest reads them anew.
    const changed = request?.type === 'run' && ((request.context as { invalidates?: string[] } | undefined)?.invalidates?.length ?? 0) > 0
    this.outbound = this.outbound
      .then(() => launched)
      .then(() => (changed && this.state.kind === 'running' ? forgetCachedReads(this.state.lease.sandbox) : undefined))
      .then(() => this.toGuest(out))
      .catch((err: unknown) => this.fail(err))
  }

  async stop(): Promise<void> {
    this.stopping = true
    if (this.state.kind === 'launching') await this.state.launched.catch(() => undefined)
    const lease = this.lease
    let hung = false
    if (this.state.kind === 'running') {
      const { child } = this.state
      const exited = await Promise.race([
        child.exited.then(
          () => true,
          () => true,
        ),
        new Promise<boolean>((r) => setTimeout(() => r(false), 10_000).unref()),
      ])
      if (!exited) {
        hung = true
        await child.kill('SIGKILL').catch(() => undefined)
      }
    }
    const dead = this.state.kind === 'dead'
    this.state = { kind: 'stopped' }
    this.inspector?.close()
    if (lease && this.keepForDebugging(lease)) return
    // A guest process that had to be killed may have left the VM in any state: replace it.
    if (lease) await this.ctx.pool.release(lease, hung || dead || !lease.sandbox.running || this.plan?.options.isolation === 'vm')
  }

  /** keepVm 'on-failure' and a failure here: the VM leaves the pool running, for `stereos-harness ssh`. */
  private keepForDebugging(lease: Lease): boolean {
    if (!this.failed || this.plan?.options.keepVm !== 'on-failure' || !lease.sandbox.running || this.ctx.pool.closing) return false
    const root = this.options.project.config.root
    const files = this.files.map((f) => (f.startsWith(`${root}/`) ? f.slice(root.length + 1) : f)).join(', ')
    try {
      this.ctx.kept.push(keepVm(lease.sandbox, `${files} failed`))
      this.ctx.pool.forget(lease)
      return true
    } catch (err) {
      this.options.project.vitest.logger.error(`stereos: could not keep VM ${lease.sandbox.info.id}: ${(err as Error).message}`)
      return false
    }
  }

  /** How this project's guest worker processes start on `lease` (and which spares fit). */
  private workerSpec(lease: Lease, plan: FilePlan): WorkerSpec {
    const { project, distPath, execArgv, env } = this.options
    const who = hostIdentity()
    const options = {
      ipc: true,
      cwd: project.config.root,
      env: {
        ...guestEnv(env, project.config.env ?? {}, plan.options.env),
        HOME: GUEST_HOME,
        STEREOS_SANDBOX: '1',
        STEREOS_VM_ID: lease.sandbox.info.id,
        STEREOS_WORKER: JSON.stringify({ dist: distPath }),
      },
    }
    // As `who` (root stays root), no_new_privs, spares niced, earlier files' processes swept.
    return this.ctx.spares.spec(lease.sandbox, who, [...execArgv, GUEST_ENTRY], options)
  }

  private async launch(files: string[]): Promise<void> {
    this.files = files
    const plan = this.ctx.plan(files)
    this.plan = plan
    const lease = await this.ctx.lease(plan)
    this.lease = lease
    this.count(files)
    const coverageDir = this.coverageDir()
    if (coverageDir) await ensureGuestDir(lease.sandbox, coverageDir, hostIdentity())
    const spec = this.workerSpec(lease, plan)
    const child = (await this.ctx.spares.take(lease.sandbox, spec.key)) ?? (await spec.start())
    const { project } = this.options
    await this.forwardInspector(lease, files)
    this.state = { kind: 'running', lease, child }
    child.stdout.pipe(project.vitest.logger.outputStream, { end: false })
    child.stderr.pipe(project.vitest.logger.errorStream, { end: false })
    const decoder = new V8Decoder(MAX_GUEST_MESSAGE)
    // Messages wait their turn (some wait for the host: attachments, coverage); while too many
    // wait, the channel is paused, so a guest that floods it fills its own buffers, not the host's memory.
    let queued = 0
    const ipc = child.ipc
    ipc?.on('data', (chunk: Buffer) => {
      let messages: unknown[]
      try {
        messages = decoder.push(chunk)
      } catch (err) {
        this.fail(err)
        ipc.destroy()
        return
      }
      queued += messages.length
      if (queued > MAX_QUEUED_MESSAGES) ipc.pause()
      for (const message of messages) {
        this.inbound = this.inbound
          .then(() => this.receive(message))
          .catch((err: unknown) => this.fail(err))
          .finally(() => {
            if (--queued <= MAX_QUEUED_MESSAGES / 2 && ipc.isPaused()) ipc.resume()
          })
      }
    })
    child.ipc?.on('error', () => undefined)
    const gone = (why: string) => {
      // The process went before answering `stop`: answer it, or Vitest waits 60 s for nothing.
      if (this.stopPending) {
        this.stopPending = false
        this.events.emit('message', response('stopped'))
      }
      if (!this.stopping) this.died(why)
    }
    void child.exited.then(
      (exit) => gone(`the guest worker process exited (code ${exit.exitCode}, signal ${exit.signal})`),
      (err: unknown) => gone((err as Error).message),
    )
    void lease.sandbox.exited.then((exit) => {
      if (!this.stopping) this.died(`the VM's QEMU exited (code ${exit.code}, signal ${exit.signal})`)
    })
    if (this.startRequest) child.ipc?.write(encodeV8(this.startRequest))
  }

  /**
   * The launch failed (describe.sandbox options invalid, boot failure or timeout, no agent):
   * answer the `run` as the guest worker would for a file that failed to import, so each file
   * shows as failed, with the error and its fix, in every reporter (summary, JSON, junit,
   * blob). A worker 'error' instead would drop the files from the reports.
   */
  private async reportUnusable(files: string[], method: 'run' | 'collect', err: unknown): Promise<void> {
    this.state = { kind: 'dead', lease: this.lease }
    const { project, distPath } = this.options
    try {
      const hash = await fileHashOf(distPath)
      const error = serializeError(err)
      for (const file of files) {
        const task = failedFileTask(file, project.config.root, project.name || undefined, hash, error)
        for (const [name, args] of failedFileCalls(task, method)) await this.firewall.call(name, args)
      }
    } catch {
      this.fail(err)
      return
    }
    this.events.emit('message', { __vitest_worker_response__: true, type: 'testfileFinished' })
  }

  /** To the guest, unless it is gone. */
  private toGuest(message: unknown): void {
    if (this.state.kind === 'running') this.state.child.ipc?.write(encodeV8(message))
  }

  /** One message from the guest, through the firewall: only what it lets pass reaches Vitest. */
  private async receive(message: unknown): Promise<void> {
    const checked = this.firewall.fromGuest(message)
    switch (checked.kind) {
      case 'refused':
        return
      case 'reply':
        this.events.emit('message', checked.reply)
        return
      case 'host-fs':
        this.toGuest(await this.boundary.hostWrite(checked.request))
        return
      case 'worker':
        this.workerResponse(checked.response)
        return
      case 'call':
        await this.forwardCall(checked.call)
    }
  }

  private workerResponse(response: WorkerResponse): void {
    if (response.type === 'stopped') this.stopPending = false
    // The guest answers the replayed `start`; Vitest already has its answer.
    if (response.type !== 'started') {
      this.events.emit('message', response)
      return
    }
    if (response.error) this.fail(response.error)
    // This file's process has imported Vitest: start the next file's on the same VM now.
    else if (this.lease && this.plan && this.plan.options.isolation === 'process')
      this.ctx.spares.prepare(this.lease.sandbox, this.workerSpec(this.lease, this.plan))
  }

  /** A checked call, after the pool's part: attachments read from the guest, coverage shipped, VM logs on failures. */
  private async forwardCall(call: Call): Promise<void> {
    if (this.lease) {
      try {
        await this.boundary.readAttachments(call, this.lease.sandbox, this.plan?.options.attachmentMaxBytes)
      } catch (err) {
        // The test's annotate()/recordArtifact() rejects with the reason; Vitest never sees the call.
        this.firewall.answer(call, err)
        return
      }
      await this.boundary.shipCoverage(call, this.lease.sandbox)
      const failedSuites = failedSuitesIn(call)
      for (const result of failedSuites) result.errors.push(vmLogError(this.lease.sandbox))
      const failed = failedTestsIn(call)
      if (failed.length || failedSuites.length) this.failed = true
      if (failed.length) {
        const annotations = vmLogAnnotations(this.lease.sandbox)
        // One at a time: reporters list annotations in the order they were recorded.
        for (const id of failed) for (const annotation of annotations) await this.firewall.call('onTaskArtifactRecord', [id, annotation])
      }
    }
    this.events.emit('message', call)
  }

  /** Where the coverage provider wants each worker's results, when coverage is on. */
  private coverageDir(): string | undefined {
    const provider = (this.options.project.vitest as { coverageProvider?: { coverageFilesDirectory?: string } | null }).coverageProvider
    return provider?.coverageFilesDirectory
  }

  /** --inspect/--inspect-brk: the guest worker's inspector, reachable on the host's 127.0.0.1 as with forks. */
  private async forwardInspector(lease: Lease, files: string[]): Promise<void> {
    const { project } = this.options
    const config = (project.config as { inspector?: InspectorConfig }).inspector ?? (project.vitest.config as { inspector?: InspectorConfig }).inspector
    if (!config?.enabled) return
    this.inspector = await InspectorForward.open(lease.sandbox, (await lease.sandbox.agent()).info.execPath, config)
    project.vitest.logger.log(
      `stereos: debugger: attach to 127.0.0.1:${this.inspector.port} (the guest worker of ${files.join(', ')} in VM ${lease.sandbox.info.id})`,
    )
  }

  private count(files: string[]): void {
    if (this.lease) this.lease.files += files.length
    this.ctx.pool.files += files.length
  }

  /**
   * isolate: false: Vitest offers this worker the next file. Yes when its guest process is
   * running and the file would get a VM with the same options (its describe.sandbox literals).
   */
  canReuse(task: PoolTask): boolean {
    if (this.state.kind !== 'running' || !this.plan) return false
    try {
      return this.ctx.plan(task.context.files.map((f) => f.filepath)).key === this.plan.key
    } catch {
      return false
    }
  }

  private died(why: string): void {
    // The pool shutting its VMs down at the end of the run is not a death.
    if (this.state.kind === 'dead' || this.stopping || this.ctx.pool.closing) return
    const lease = this.lease
    this.state = { kind: 'dead', lease }
    // A killed VM usually shows first as a lost connection: give QEMU's exit a moment to be
    // seen, so the error names the real cause.
    const settle = lease ? Promise.race([lease.sandbox.exited.then(() => undefined), new Promise<void>((r) => setTimeout(r, 2000).unref())]) : Promise.resolve()
    void settle.then(() => this.reportDeath(why))
  }

  private reportDeath(reason: string): void {
    const lease = this.lease
    const exit = lease && !lease.sandbox.running ? lease.sandbox.info.pid : undefined
    const why = exit !== undefined ? `the VM's QEMU (pid ${exit}) exited` : reason
    const logs: Record<string, string> = lease ? { serial: lease.sandbox.logs.serial, qemu: lease.sandbox.logs.qemu } : {}
    this.fail(
      new HarnessError(
        'AGENT_UNREACHABLE',
        `stereos pool: ${why} while running a test file${lease ? ` in VM ${lease.sandbox.info.id}. Last lines of its console:\n${tail(lease.sandbox.logs.serial).replace(/^/gm, '  ')}` : ''}`,
        {
          fix: lease
            ? `read ${lease.sandbox.logs.serial} (guest console) and ${lease.sandbox.logs.qemu}; the pool replaces the VM for the next file`
            : 'see the error above',
          logs,
        },
      ),
    )
    // Only 'error': Vitest fails the file with it and stops this worker (stop() discards the
    // VM). An 'exit' on top would surface as an unhandled "Worker exited unexpectedly".
  }

  private fail(err: unknown): void {
    // After Vitest let go of this worker nobody listens, and an unheard 'error' would crash the run.
    if (this.events.listenerCount('error') === 0) return
    this.events.emit('error', err instanceof Error ? err : new Error(String(err)))
  }
}
