import { EventEmitter } from 'node:events'
import { fileURLToPath } from 'node:url'
import { HarnessError, keepVm, tail, type GuestProcess } from '@stereos/harness'
import { encodeV8, V8Decoder } from '@stereos/harness/wire'
import type { PoolOptions, PoolTask, PoolWorker, WorkerRequest } from 'vitest/node'
import { isHostFsRequest } from '../shared/host-fs.js'
import { failedSuitesIn, failedTestsIn, vmLogAnnotations, vmLogError } from './artifacts.js'
import { Boundary, type Frame } from './boundary.js'
import { failedFileCalls, failedFileTask, fileHashOf, serializeError } from './failed-file.js'
import type { FilePlan, PoolContext } from './context.js'
import { guestEnv } from './guest-env.js'
import type { UpdateMode } from './host-writes.js'
import type { Lease } from './lease-pool.js'
import { InspectorForward, type InspectorConfig } from './inspector.js'
import { ensureGuestDir, forgetCachedReads, GUEST_HOME, hostIdentity } from './view.js'
import type { WorkerSpec } from './warm-workers.js'

const GUEST_ENTRY = fileURLToPath(new URL('../guest/worker-entry.js', import.meta.url))

type Request = WorkerRequest & { type: string; context?: { files?: { filepath: string }[] } }

function isRequest(message: unknown): message is Request {
  return typeof message === 'object' && message !== null && (message as { __vitest_worker_request__?: boolean }).__vitest_worker_request__ === true
}

function isResponse(message: unknown, type: string): message is { type: string; error?: unknown } {
  return (
    typeof message === 'object' &&
    message !== null &&
    (message as { __vitest_worker_response__?: boolean }).__vitest_worker_response__ === true &&
    (message as { type?: string }).type === type
  )
}

const response = (type: 'started' | 'stopped') => ({ __vitest_worker_response__: true, type })

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
  /** This pool's own calls to Vitest, by birpc id; their replies never reach the guest. */
  private readonly ownCalls = new Map<string, () => void>()
  private nextCall = 0
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
    this.boundary = new Boundary({
      viewRoots: ctx.view.roots,
      projectRoot: ctx.projectRoot,
      update: config.snapshotOptions?.updateSnapshot,
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
    const frame = m as Frame
    if (frame.t === 's' && typeof frame.i === 'string') {
      const own = this.ownCalls.get(frame.i)
      if (own) {
        this.ownCalls.delete(frame.i)
        own()
        return
      }
      this.boundary.checkReply(frame)
    }
    if (request?.type === 'stop') this.stopPending = true
    if (request?.type === 'run' || request?.type === 'collect') {
      const files = (request.context?.files ?? []).map((f) => f.filepath)
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
      .then(() => {
        if (this.state.kind === 'running') this.state.child.ipc?.write(encodeV8(m))
      })
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
    const decoder = new V8Decoder()
    child.ipc?.on('data', (chunk: Buffer) => {
      let messages: unknown[]
      try {
        messages = decoder.push(chunk)
      } catch (err) {
        this.fail(err)
        return
      }
      for (const message of messages) this.inbound = this.inbound.then(() => this.receive(message)).catch((err: unknown) => this.fail(err))
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
        for (const [name, args] of failedFileCalls(task, method)) await this.call(name, args)
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

  private async receive(message: unknown): Promise<void> {
    // The guest answers the replayed `start`; Vitest already has its answer.
    if (isResponse(message, 'stopped')) this.stopPending = false
    if (isResponse(message, 'started')) {
      if (message.error) this.fail(message.error)
      // This file's process has imported Vitest: start the next file's on the same VM now.
      else if (this.lease && this.plan && this.plan.options.isolation === 'process')
        this.ctx.spares.prepare(this.lease.sandbox, this.workerSpec(this.lease, this.plan))
      return
    }
    if (isHostFsRequest(message)) {
      this.toGuest(await this.boundary.hostWrite(message))
      return
    }
    const frame = message as Frame
    this.boundary.watch(frame)
    if (this.lease) {
      try {
        await this.boundary.readAttachments(message, this.lease.sandbox, this.plan?.options.attachmentMaxBytes)
      } catch (err) {
        // The test's annotate()/recordArtifact() rejects with the reason; Vitest never sees the call.
        if (typeof frame.i === 'string') this.toGuest({ t: 's', i: frame.i, e: err })
        return
      }
      await this.boundary.shipCoverage(frame, this.lease.sandbox)
      const failedSuites = failedSuitesIn(message)
      for (const result of failedSuites) result.errors.push(vmLogError(this.lease.sandbox))
      const failed = failedTestsIn(message)
      if (failed.length || failedSuites.length) this.failed = true
      if (failed.length) {
        const annotations = vmLogAnnotations(this.lease.sandbox)
        // One at a time: reporters list annotations in the order they were recorded.
        for (const id of failed) for (const annotation of annotations) await this.call('onTaskArtifactRecord', [id, annotation])
      }
    }
    this.events.emit('message', message)
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

  /** A birpc call from this pool to Vitest, answered through send() (and not forwarded). */
  private call(method: string, args: unknown[]): Promise<void> {
    const i = `stereos-${++this.nextCall}`
    return new Promise<void>((resolve) => {
      this.ownCalls.set(i, resolve)
      this.events.emit('message', { t: 'q', m: method, a: args, i })
    })
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
