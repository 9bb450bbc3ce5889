import { EventEmitter } from 'node:events'
import { dirname, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { HarnessError, type PoolCaptureContext, tail } from '@stereos/harness'
import { encodeV8, V8Decoder } from '@stereos/harness/wire'
import type { PoolOptions, PoolTask, PoolWorker, WorkerRequest } from 'vitest/node'
import { vitestMajor } from '../version.js'
import { addCaptureMeta, addVmLogMeta, failedSuitesIn, failedTestsIn, vmLogAnnotations, vmLogError, vmLogMeta } from './artifacts.js'
import { Boundary } from './boundary.js'
import type { CaptureBudget } from './capture.js'
import type { FilePlan, PoolContext } from './context.js'
import { failedFileCalls, failedFileTask, fileHashOf, serializeError } from './failed-file.js'
import { type Call, RpcFirewall, type WorkerResponse } from './firewall/firewall.js'
import { guestEnv } from './guest-env.js'
import { FileLog } from './guest-log.js'
import type { UpdateMode } from './host-writes.js'
import { forwardInspector, type InspectorConfig, type InspectorForward } from './inspector.js'
import type { Lease } from './lease-pool.js'
import { ensureGuestDir, forgetCachedReads, GUEST_HOME } from './view.js'
import type { PoolProcess } from './vm.js'
import type { WorkerSpec } from './warm-workers.js'

/** Vitest's own type for worker event listeners (its arguments differ by event and major). */
type Listener = Parameters<PoolWorker['on']>[1]

const GUEST_ENTRY = fileURLToPath(new URL('../guest/worker-entry.js', import.meta.url))

type Request = WorkerRequest & { type: string; context?: { files?: { filepath: string }[]; invalidates?: string[] } }

function isRequest(message: unknown): message is Request {
  return typeof message === 'object' && message !== null && (message as { __vitest_worker_request__?: boolean }).__vitest_worker_request__ === true
}

const response = (type: 'started' | 'stopped' | 'testfileFinished') => ({ __vitest_worker_response__: true, type })

/** One message from a guest worker: a big file's collected task tree fits; a runaway one does not. */
const MAX_GUEST_MESSAGE = 64 * 1024 ** 2
/** Messages from one guest worker waiting for the host before its channel is paused. */
const MAX_QUEUED_MESSAGES = 1000
/** How long a guest worker has to exit after answering `stop` before it is killed. */
const EXIT_GRACE_MS = 10_000

/** A launched worker: its files, their plan, the leased VM and the guest process running them. */
interface Run {
  readonly files: string[]
  readonly plan: FilePlan
  readonly lease: Lease
  readonly child: PoolProcess
  readonly inspector: InspectorForward | undefined
  /** Vitest sent `stop` (a forced stop sends none: the process is killed at once). */
  stopSent: boolean
  /** Vitest waits for `stopped`. */
  stopAnswerDue: boolean
  /** A test or the file failed (keepVm keeps such a VM). */
  failed: boolean
  /** What the guest prints while the current file runs, for its failure report. */
  readonly log: FileLog
  /** Tests that failed (ids): the capture's annotation goes to each. */
  readonly failedIds: string[]
  /** Where this run's VM is captured when its file is done (capture 'on-failure'; reserved at the first failure). */
  capture: string | undefined
}

/** A launch in flight; what it leased so far is given back if it fails. */
interface Launch {
  readonly files: string[]
  lease: Lease | undefined
  /** The run, or undefined when the launch failed (the file was reported as failed). */
  readonly done: Promise<Run | undefined>
}

/**
 * Where one PoolWorker is. Vitest drives it start → run… → stop; the VM is only chosen at the
 * first `run` (its file's describe.sandbox options pick the VM), so `start` is answered here and
 * replayed to the guest process once there is one.
 */
type State =
  /** No guest process yet. */
  | { kind: 'idle'; start: Request | undefined }
  /** Leasing a VM and starting the guest process; frames from Vitest queue behind it. */
  | { kind: 'launching'; start: Request | undefined; launch: Launch }
  /** Frames flow both ways, through the firewall. */
  | { kind: 'running'; run: Run }
  /** The launch failed, or the process or its VM died: Vitest got one error; nothing is sent on. */
  | { kind: 'dead'; files: string[]; lease: Lease | undefined; run: Run | undefined }
  /** stop() began: the guest going away now is expected. */
  | { kind: 'stopping'; files: string[] }
  /** The VM went back to the pool (or was discarded, or kept). */
  | { kind: 'stopped' }

/** An error from the guest or from a failed step, as an Error Vitest can show (serialized errors are plain objects). */
function asError(err: unknown): Error {
  if (err instanceof Error) return err
  const e = err as { name?: unknown; message?: unknown; stack?: unknown } | null
  if (typeof e?.message === 'string') {
    const error = new Error(e.message)
    if (typeof e.name === 'string') error.name = e.name
    if (typeof e.stack === 'string') error.stack = e.stack
    return error
  }
  try {
    return new Error(String(err))
  } catch {
    return new Error('the guest worker failed with an error that cannot be shown')
  }
}

/**
 * One Vitest PoolWorker: a fresh guest Node process running Vitest's worker, in a VM leased
 * from the pool, with every frame between them checked on the way (pool/firewall/): calls
 * Vitest's worker makes, answers confined to the project view, attachments read from the guest,
 * writes to the host only through the snapshot channel, VM logs added to failed tests.
 */
export class StereosPoolWorker implements PoolWorker {
  readonly name = 'stereos'
  private readonly events = new EventEmitter()
  private state: State = { kind: 'idle', start: undefined }
  /** Frames to the guest, in order, each after the launch. */
  private outbound: Promise<void> = Promise.resolve()
  /** Frames from the guest, in order (some wait for the host: attachments, annotations). */
  private inbound: Promise<void> = Promise.resolve()
  /** Vitest's RPC with the guest: only allowlisted calls pass, under the pool's ids, and every answer is checked. */
  private readonly firewall: RpcFirewall
  /** What crosses from the guest to the host, checked. */
  private readonly boundary: Boundary

  constructor(
    private readonly options: PoolOptions,
    private readonly ctx: PoolContext,
    /** The run's captures (capture 'on-failure'), shared by the project's workers. */
    private readonly captures: CaptureBudget,
  ) {
    const config = options.project.config as { snapshotOptions?: { updateSnapshot?: UpdateMode } }
    this.firewall = new RpcFirewall({
      viewRoots: ctx.view.roots,
      projectRoot: options.project.config.root,
      vitestMajor: vitestMajor(options.project.vitest.version),
      toVitest: (call) => this.events.emit('message', call),
      toGuest: (reply) => this.toGuest(reply),
      // The reason names what the guest sent: printable characters only, one bounded line.
      refused: (why) =>
        options.project.vitest.logger.error(
          `stereos: refused from the guest worker of ${this.files().join(', ') || 'a test file'}: ${why.replace(/[^\x20-\x7e]/g, '?').slice(0, 300)}`,
        ),
    })
    this.boundary = new Boundary({
      viewRoots: ctx.view.roots,
      projectRoot: ctx.projectRoot,
      update: config.snapshotOptions?.updateSnapshot,
      snapshotFiles: this.firewall.snapshotFiles,
      testFiles: this.firewall.testFiles,
      coverageDir: () => this.coverageDir(),
      guestFilesDir: () => ctx.guestFilesDir(),
    })
  }

  on(event: string, callback: Listener): void {
    this.events.on(event, callback)
  }

  off(event: string, callback: Listener): void {
    this.events.off(event, callback)
  }

  deserialize(data: unknown): unknown {
    return data
  }

  async start(): Promise<void> {
    // The VM is picked on the first `run`; see State.
  }

  /** The files this worker was sent, in whichever state it is. */
  private files(): string[] {
    const s = this.state
    if (s.kind === 'launching') return s.launch.files
    if (s.kind === 'running') return s.run.files
    return s.kind === 'dead' || s.kind === 'stopping' ? s.files : []
  }

  send(message: WorkerRequest): void {
    const m = message as unknown
    const request = isRequest(m) ? m : undefined
    const s = this.state
    if (request?.type === 'start') {
      if (s.kind === 'idle') this.state = { kind: 'idle', start: request }
      setImmediate(() => this.events.emit('message', response('started')))
      return
    }
    // Nothing in the guest can answer `stop` when there is no process (or it is going: Vitest 4
    // may close the pool, and so the VMs, before it stops its workers).
    if (request?.type === 'stop' && (s.kind === 'idle' || s.kind === 'dead' || this.ctx.pool.closing)) {
      setImmediate(() => this.events.emit('message', response('stopped')))
      return
    }
    // Answers to guest calls come back checked, under the guest's id; the pool's own end here.
    const out = this.firewall.fromVitest(m)
    if (out === undefined) return
    if (request?.type === 'stop' && s.kind === 'running') {
      s.run.stopSent = true
      s.run.stopAnswerDue = true
    }
    if (request?.type === 'run' || request?.type === 'collect') {
      const files = (request.context?.files ?? []).map((f) => f.filepath)
      this.firewall.sent(files)
      // isolate: false: Vitest hands a running worker more files (canReuse said yes).
      if (s.kind === 'running') {
        this.count(s.run.lease, files)
        s.run.log.restart(files)
      }
      if (s.kind === 'idle') this.beginLaunch(files, request.type === 'collect' ? 'collect' : 'run', s.start)
    }
    const launching = this.state.kind === 'launching' ? this.state.launch.done : undefined
    // Watch mode: the host changed files since the VM cached them; the guest reads them anew.
    const changed = request?.type === 'run' && (request.context?.invalidates?.length ?? 0) > 0
    this.outbound = this.outbound
      .then(() => launching)
      .then(() => (changed && this.state.kind === 'running' ? forgetCachedReads(this.state.run.lease.vm) : undefined))
      .then(() => this.toGuest(out))
      .catch((err: unknown) => this.fail(err))
  }

  private beginLaunch(files: string[], method: 'run' | 'collect', start: Request | undefined): void {
    const launch: Launch = {
      files,
      lease: undefined,
      done: Promise.resolve().then(async () => {
        try {
          const run = await this.launch(launch, start)
          if (this.state.kind === 'launching') this.state = { kind: 'running', run }
          return run
        } catch (err) {
          // A file whose VM cannot be had fails as a file (with the reason), not as the worker.
          if (this.state.kind === 'launching') this.state = { kind: 'dead', files, lease: launch.lease, run: undefined }
          await this.reportUnusable(files, method, err)
          return undefined
        }
      }),
    }
    this.state = { kind: 'launching', start, launch }
  }

  async stop(): Promise<void> {
    const s = this.state
    if (s.kind === 'stopped' || s.kind === 'stopping') return
    this.state = { kind: 'stopping', files: this.files() }
    const launched = s.kind === 'launching' ? await s.launch.done : undefined
    const run = s.kind === 'running' ? s.run : s.kind === 'dead' ? s.run : launched
    const lease = run?.lease ?? (s.kind === 'dead' ? s.lease : s.kind === 'launching' ? s.launch.lease : undefined)
    // Vitest asked `stop`: the process exits on its own, or is killed after a grace period and its
    // VM replaced (it may be in any state). A forced stop (after a failed task) kills it at once.
    let hung = false
    if (run && s.kind !== 'dead') {
      const exited = run.stopSent
        ? await Promise.race([
            run.child.exited.then(
              () => true,
              () => true,
            ),
            delay(EXIT_GRACE_MS, false),
          ])
        : false
      if (!exited) {
        hung = run.stopSent
        await run.child.kill('SIGKILL').catch(() => undefined)
      }
    }
    run?.inspector?.close()
    this.state = { kind: 'stopped' }
    if (!lease) return
    if (run && this.keepForDebugging(run)) return
    const isolationVm = run?.plan.options.isolation === 'vm'
    await this.ctx.pool.release(lease, hung || s.kind === 'dead' || !lease.vm.running || isolationVm)
  }

  /** keepVm 'on-failure' and a failure here: the VM leaves the pool running, for `stereos-harness ssh`. */
  private keepForDebugging(run: Run): boolean {
    const { lease } = run
    if (!run.failed || run.plan.options.keepVm !== 'on-failure' || !lease.vm.running || this.ctx.pool.closing) return false
    const root = this.options.project.config.root
    const files = run.files.map((f) => (f.startsWith(`${root}/`) ? f.slice(root.length + 1) : f)).join(', ')
    try {
      this.ctx.kept.push(lease.vm.keep(`${files} failed`))
      this.ctx.pool.forget(lease)
      return true
    } catch (err) {
      this.options.project.vitest.logger.error(`stereos: could not keep VM ${lease.vm.info.id}: ${(err as Error).message}`)
      return false
    }
  }

  /**
   * capture 'on-failure': the file is done and failed. Its process (and the VM's spare) ends, the
   * VM is saved into `path` (Sandbox.capture: secrets gone, QEMU ends with it), and each failed
   * test gets an annotation naming the file and how to reopen it, before Vitest hears the file is
   * done (so every reporter has it). The VM is spent: stop() retires its lease.
   */
  private async captureRun(run: Run, path: string): Promise<void> {
    const { lease } = run
    const { vm } = lease
    const { project } = this.options
    this.state = { kind: 'dead', files: run.files, lease, run }
    run.capture = undefined
    run.inspector?.close()
    await this.ctx.spares.discard(vm)
    await run.child.kill('SIGKILL').catch(() => undefined)
    await Promise.race([run.child.exited.catch(() => undefined), delay(5_000, undefined)])
    const root = project.vitest.config.root
    const shown = relative(process.cwd(), path) || path
    let message: string
    try {
      const report = await vm.capture(path, { context: await this.captureContext(run, root) })
      const held = report.ram.included ? '' : ` without its RAM (${report.ram.reason ?? 'left out'}): logs and disk only`
      message = `VM ${vm.info.id} captured${held} in ${shown} (${(report.bytes / 1e6).toFixed(1)} MB, ${(report.timings.totalMs / 1000).toFixed(1)} s): reopen it on any machine with \`npx stereos-harness debug ${shown}\``
      project.vitest.logger.log(`stereos: ${relative(root, run.files[0] ?? '')}: ${message}`)
    } catch (err) {
      message = `VM ${vm.info.id} could not be captured: ${(err as Error).message.split('\n')[0]}`
      project.vitest.logger.error(`stereos: ${relative(root, run.files[0] ?? '')}: ${message}`)
      // Scrubbed, it has no agent and may not answer a graceful shutdown: end it now, not at stop().
      await vm.shutdown({ timeoutMs: 1_000 }).catch(() => undefined)
    }
    const annotation = { type: 'internal:annotation', annotation: { type: 'stereos capture', message } }
    for (const id of run.failedIds) await this.firewall.call('onTaskArtifactRecord', [id, annotation])
  }

  /** What `stereos-harness debug` needs to lay the local checkout in the view and rerun the file (PoolCaptureContext). */
  private async captureContext(run: Run, root: string): Promise<PoolCaptureContext> {
    const { vm } = run.lease
    const { view } = this.ctx
    const firstShare = run.plan.boot.shared.length
    const checkout = view.roots.find((r) => view.project === r || view.project.startsWith(`${r}/`)) ?? view.project
    const state = this.options.project.vitest.state as { getReportedEntityById?: (id: string) => { fullName?: string } | undefined }
    return {
      file: relative(root, run.files[0] ?? ''),
      failedTests: run.failedIds.map((id) => state.getReportedEntityById?.(id)?.fullName ?? id),
      checkout,
      root,
      view: view.roots.map((r, i) => ({ tag: `share${firstShare + i}`, root: r })),
      testUser: vm.testUser,
      home: GUEST_HOME,
      node: await vm.guestNode(),
      vitest: { dir: dirname(this.options.distPath), version: this.options.project.vitest.version },
    }
  }

  /** How this project's guest worker processes start on `lease` (and which spares fit). */
  private workerSpec(lease: Lease, plan: FilePlan): WorkerSpec {
    const { project, distPath, execArgv, env } = this.options
    const options = {
      ipc: true,
      cwd: project.config.root,
      env: {
        ...guestEnv(env, project.config.env ?? {}, plan.options.env),
        HOME: GUEST_HOME,
        STEREOS_SANDBOX: '1',
        STEREOS_VM_ID: lease.vm.info.id,
        STEREOS_WORKER: JSON.stringify({ dist: distPath }),
      },
    }
    // As the VM's test user (root only when the config says so), no_new_privs, spares niced, earlier files' processes swept.
    return this.ctx.spares.spec(lease.vm, lease.vm.testUser, [...execArgv, GUEST_ENTRY], options)
  }

  /** Lease a VM for the files, take its spare process or start one, and wire it to Vitest. */
  private async launch(launch: Launch, start: Request | undefined): Promise<Run> {
    const { files } = launch
    const plan = this.ctx.plan(files)
    const lease = await this.ctx.lease(plan)
    launch.lease = lease
    this.count(lease, files)
    const coverageDir = this.coverageDir()
    if (coverageDir) await ensureGuestDir(lease.vm, coverageDir, lease.vm.testUser)
    const spec = this.workerSpec(lease, plan)
    const child = (await this.ctx.spares.take(lease.vm, spec.key)) ?? (await spec.start())
    const inspector = await this.forwardInspector(lease, files)
    const log = new FileLog(lease.vm, files)
    const run: Run = { files, plan, lease, child, inspector, stopSent: false, stopAnswerDue: false, failed: false, log, failedIds: [], capture: undefined }
    const { project } = this.options
    child.stdout?.pipe(project.vitest.logger.outputStream, { end: false })
    child.stderr?.pipe(project.vitest.logger.errorStream, { end: false })
    child.stderr?.on('data', (chunk: Buffer) => log.stderr.push(chunk))
    this.readFrames(child)
    const gone = (why: string) => {
      // The process went before answering `stop`: answer it, or Vitest waits 60 s for nothing.
      if (run.stopAnswerDue) {
        run.stopAnswerDue = false
        this.events.emit('message', response('stopped'))
      }
      this.died(run, why)
    }
    void child.exited.then(
      (exit) => gone(`the guest worker process exited (code ${exit.exitCode}, signal ${exit.signal})`),
      (err: unknown) => gone((err as Error).message),
    )
    void lease.vm.exited.then((exit) => this.died(run, `the VM's QEMU exited (code ${exit.code}, signal ${exit.signal})`))
    if (start) child.ipc?.write(encodeV8(start))
    return run
  }

  /**
   * Frames from the guest, in order. Messages wait their turn (some wait for the host:
   * attachments, coverage); while too many wait, the channel is paused, so a guest that floods it
   * fills its own buffers, not the host's memory.
   */
  private readFrames(child: PoolProcess): void {
    const ipc = child.ipc
    if (!ipc) return
    const decoder = new V8Decoder(MAX_GUEST_MESSAGE)
    let queued = 0
    ipc.on('data', (chunk: Buffer) => {
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
    ipc.on('error', () => undefined)
  }

  /**
   * The launch failed (describe.sandbox options invalid, boot failure or timeout, no agent):
   * answer the `run` as the guest worker would for a file that failed to import, so each file
   * shows as failed, with the error and its fix, in every reporter (summary, JSON, junit,
   * blob). A worker 'error' instead would drop the files from the reports.
   */
  private async reportUnusable(files: string[], method: 'run' | 'collect', err: unknown): Promise<void> {
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
    this.events.emit('message', response('testfileFinished'))
  }

  /** To the guest, unless it is gone. */
  private toGuest(message: unknown): void {
    if (this.state.kind === 'running') this.state.run.child.ipc?.write(encodeV8(message))
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
        await this.workerResponse(checked.response)
        return
      case 'call':
        await this.forwardCall(checked.call)
    }
  }

  private async workerResponse(message: WorkerResponse): Promise<void> {
    const run = this.state.kind === 'running' ? this.state.run : undefined
    if (message.type === 'stopped' && run) run.stopAnswerDue = false
    // Vitest hears the file is done once its VM is captured: the reports name the capture.
    if (message.type === 'testfileFinished' && run?.capture) await this.captureRun(run, run.capture)
    // The guest answers the replayed `start`; Vitest already has its answer.
    if (message.type !== 'started') {
      this.events.emit('message', message)
      return
    }
    if (message.error) this.fail(message.error)
    // This file's process has imported Vitest: start the next file's on the same VM now.
    else if (run && run.plan.options.isolation === 'process') this.ctx.spares.prepare(run.lease.vm, this.workerSpec(run.lease, run.plan))
  }

  /** A checked call, after the pool's part: attachments read from the guest, coverage shipped, VM logs on failures. */
  private async forwardCall(call: Call): Promise<void> {
    const run = this.state.kind === 'running' ? this.state.run : undefined
    if (run) {
      const { vm } = run.lease
      try {
        await this.boundary.readAttachments(call, vm, run.plan.options.attachmentMaxBytes)
      } catch (err) {
        // The test's annotate()/recordArtifact() rejects with the reason; Vitest never sees the call.
        this.firewall.answer(call, err)
        return
      }
      await this.boundary.shipCoverage(call, vm)
      const failedSuites = failedSuitesIn(call)
      const failed = failedTestsIn(call)
      if (failed.length || failedSuites.length) {
        run.failed = true
        run.failedIds.push(...failed)
        run.capture ??= this.captures.reserve(this.options.project.vitest.config.root, run.files[0] ?? 'file', vm.info.id)
        if (run.capture) addCaptureMeta(call, failed, run.capture)
        const log = await run.log.gather(this.attachmentsDir())
        for (const result of failedSuites) result.errors.push(vmLogError(vm, log))
        addVmLogMeta(call, failed, vmLogMeta(vm, log))
        const annotations = vmLogAnnotations(vm, log)
        // One at a time: reporters list annotations in the order they were recorded.
        for (const id of failed) for (const annotation of annotations) await this.firewall.call('onTaskArtifactRecord', [id, annotation])
      }
    }
    this.events.emit('message', call)
  }

  /** Vitest's attachments dir (the failure excerpts' host copies go under it, in `stereos/`). */
  private attachmentsDir(): string {
    const config = this.options.project.config as { attachmentsDir?: string; root: string }
    return config.attachmentsDir ?? `${config.root}/.vitest-attachments`
  }

  /** Where the coverage provider wants each worker's results, when coverage is on. */
  private coverageDir(): string | undefined {
    const provider = (this.options.project.vitest as { coverageProvider?: { coverageFilesDirectory?: string } | null }).coverageProvider
    return provider?.coverageFilesDirectory
  }

  /** --inspect/--inspect-brk: the guest worker's inspector, reachable on the host's 127.0.0.1 as with forks. */
  private async forwardInspector(lease: Lease, files: string[]): Promise<InspectorForward | undefined> {
    const { project } = this.options
    const config = (project.config as { inspector?: InspectorConfig }).inspector ?? (project.vitest.config as { inspector?: InspectorConfig }).inspector
    if (!config?.enabled) return undefined
    const inspector = await forwardInspector(lease.vm, await lease.vm.guestNode(), config)
    project.vitest.logger.log(`stereos: debugger: attach to 127.0.0.1:${inspector.port} (the guest worker of ${files.join(', ')} in VM ${lease.vm.info.id})`)
    return inspector
  }

  private count(lease: Lease, files: string[]): void {
    lease.files += files.length
    this.ctx.pool.files += files.length
  }

  /**
   * isolate: false: Vitest offers this worker the next file. Yes when its guest process is
   * running and the file would get a VM with the same options (its describe.sandbox literals).
   */
  canReuse(task: PoolTask): boolean {
    if (this.state.kind !== 'running') return false
    try {
      return this.ctx.plan(task.context.files.map((f) => f.filepath)).key === this.state.run.plan.key
    } catch {
      return false
    }
  }

  /** The run's process or VM went away; unless that was expected, the file fails with the VM's account. */
  private died(run: Run, why: string): void {
    // Only a death of the running process counts: not during stop(), not the pool shutting its VMs down at the end.
    if (this.state.kind !== 'running' || this.state.run !== run || this.ctx.pool.closing) return
    this.state = { kind: 'dead', files: run.files, lease: run.lease, run }
    // A killed VM usually shows first as a lost connection: give QEMU's exit a moment to be
    // seen, so the error names the real cause.
    void Promise.race([run.lease.vm.exited.then(() => undefined), delay(2000, undefined)]).then(() => this.reportDeath(run, why))
  }

  private reportDeath(run: Run, reason: string): void {
    const { vm } = run.lease
    const why = vm.running ? reason : `the VM's QEMU (pid ${vm.info.pid}) exited`
    this.fail(
      new HarnessError(
        'AGENT_UNREACHABLE',
        `stereos pool: ${why} while running a test file in VM ${vm.info.id}. Last lines of its console:\n${tail(vm.logs.serial).replace(/^/gm, '  ')}`,
        {
          fix: `read ${vm.logs.serial} (guest console) and ${vm.logs.qemu}; the pool replaces the VM for the next file`,
          logs: { serial: vm.logs.serial, qemu: vm.logs.qemu },
        },
      ),
    )
    // Only 'error': Vitest fails the file with it and stops this worker (stop() discards the
    // VM). An 'exit' on top would surface as an unhandled "Worker exited unexpectedly".
  }

  private fail(err: unknown): void {
    // After Vitest let go of this worker nobody listens, and an unheard 'error' would crash the run.
    if (this.events.listenerCount('error') === 0) return
    this.events.emit('error', asError(err))
  }
}

function delay<T>(ms: number, value: T): Promise<T> {
  return new Promise<T>((resolve) => setTimeout(() => resolve(value), ms).unref())
}
