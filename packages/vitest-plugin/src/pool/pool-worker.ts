import { EventEmitter } from 'node:events'
import { existsSync } from 'node:fs'
import { isAbsolute, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { HarnessError, tail, type GuestProcess } from '@stereos/harness'
import { encodeV8, V8Decoder } from '@stereos/harness/wire'
import type { PoolOptions, PoolWorker, WorkerRequest } from 'vitest/node'
import { failedTestsIn, guestOnlyAttachments, localizeAttachment, vmLogAnnotations } from './artifacts.js'
import { isHostFsRequest } from '../guest/host-fs.js'
import { serveHostFs } from './host-fs.js'
import type { Lease } from './lease-pool.js'
import type { ResolvedStereosOptions } from '../options.js'
import type { PoolContext } from './context.js'

const GUEST_ENTRY = fileURLToPath(new URL('../guest/worker-entry.js', import.meta.url))

type Request = WorkerRequest & { type: string; context?: { files?: { filepath: string }[] } }

function isRequest(message: unknown): message is Request {
  return typeof message === 'object' && message !== null && (message as { __vitest_worker_request__?: boolean }).__vitest_worker_request__ === true
}

function isResponse(message: unknown, type: string): message is { type: string; error?: unknown } {
  return typeof message === 'object' && message !== null && (message as { __vitest_worker_response__?: boolean }).__vitest_worker_response__ === true && (message as { type?: string }).type === type
}

/**
 * Host variables that describe the host machine, not the test run: the guest has its own.
 * Everything else (Vitest's, the config's `env`, what the user set for the run) goes through,
 * as it does for the forks pool.
 */
const HOST_ONLY = /^(PATH|HOME|USER|LOGNAME|SHELL|PWD|OLDPWD|TMPDIR|TEMP|TMP|HOSTNAME|MAIL|NODE_OPTIONS|NODE_PATH|INIT_CWD|LD_.*|XDG_.*|SSH_.*|DBUS_.*|DISPLAY|WAYLAND_.*|npm_.*|NVM_.*|STEREOS_.*)$/

export function guestEnv(env: Partial<NodeJS.ProcessEnv>): Record<string, string> {
  const out: Record<string, string> = {}
  for (const [key, value] of Object.entries(env)) if (value !== undefined && !HOST_ONLY.test(key)) out[key] = value
  return out
}

/**
 * One Vitest PoolWorker: a fresh guest Node process running Vitest's worker, in a VM leased
 * from the pool. The VM is chosen when the first `run` arrives (it names the file, whose
 * describe.sandbox options pick the VM), so `start` is answered here and replayed to the guest.
 */
export class StereosPoolWorker implements PoolWorker {
  readonly name = 'stereos'
  private readonly events = new EventEmitter()
  private startRequest: Request | undefined
  private lease: Lease | undefined
  private isolation: ResolvedStereosOptions['isolation'] = 'process'
  private child: GuestProcess | undefined
  private launching: Promise<void> | undefined
  private outbound: Promise<void> = Promise.resolve()
  private inbound: Promise<void> = Promise.resolve()
  private stopping = false
  private dead = false
  /** Vitest asked the guest to stop and has not had its `stopped` yet. */
  private stopPending = false
  private nextCall = 0
  private readonly calls = new Map<string, () => void>()

  constructor(
    private readonly options: PoolOptions,
    private readonly ctx: PoolContext,
  ) {}

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
    // The VM is picked on the first `run`; see the class comment.
  }

  send(message: WorkerRequest): void {
    const m = message as unknown
    if (isRequest(m) && m.type === 'start') {
      this.startRequest = m
      setImmediate(() => this.events.emit('message', { __vitest_worker_response__: true, type: 'started' }))
      return
    }
    // Nothing in the guest can answer `stop` when the process or its VM is gone (or going:
    // Vitest 4 may close the pool, and so the VMs, before it stops its workers).
    if (isRequest(m) && m.type === 'stop' && ((!this.child && !this.launching) || this.dead || this.ctx.pool.closing)) {
      setImmediate(() => this.events.emit('message', { __vitest_worker_response__: true, type: 'stopped' }))
      return
    }
    // Replies to the artifact calls this pool made itself never reach the guest.
    const reply = m as { t?: string; i?: string }
    if (reply.t === 's' && typeof reply.i === 'string' && this.calls.has(reply.i)) {
      this.calls.get(reply.i)?.()
      this.calls.delete(reply.i)
      return
    }
    if (isRequest(m) && m.type === 'stop') this.stopPending = true
    if (isRequest(m) && (m.type === 'run' || m.type === 'collect') && !this.launching) {
      const files = (m.context?.files ?? []).map((f) => f.filepath)
      this.launching = this.launch(files)
    }
    this.outbound = this.outbound
      .then(() => this.launching)
      .then(() => {
        this.child?.ipc?.write(encodeV8(m))
      })
      .catch((err: unknown) => this.fail(err))
  }

  async stop(): Promise<void> {
    this.stopping = true
    await this.launching?.catch(() => undefined)
    const { child, lease } = this
    let hung = false
    if (child) {
      const exited = await Promise.race([child.exited.then(() => true, () => true), new Promise<boolean>((r) => setTimeout(() => r(false), 10_000).unref())])
      if (!exited) {
        hung = true
        await child.kill('SIGKILL').catch(() => undefined)
      }
    }
    // A guest process that had to be killed may have left the VM in any state: replace it.
    if (lease) await this.ctx.pool.release(lease, hung || this.dead || !lease.sandbox.running || this.isolation === 'vm')
  }

  private async launch(files: string[]): Promise<void> {
    const { lease, isolation } = await this.ctx.lease(files)
    this.lease = lease
    this.isolation = isolation
    lease.files += files.length
    this.ctx.pool.files += files.length
    const agent = await lease.sandbox.agent()
    const { project, distPath, execArgv, env } = this.options
    const child = await lease.sandbox.spawn(agent.info.execPath, [...execArgv, GUEST_ENTRY, distPath], {
      ipc: true,
      cwd: project.config.root,
      env: { ...guestEnv(env), STEREOS_SANDBOX: '1', STEREOS_VM_ID: lease.sandbox.info.id },
    })
    this.child = child
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
        this.events.emit('message', { __vitest_worker_response__: true, type: 'stopped' })
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

  private async receive(message: unknown): Promise<void> {
    // The guest answers the replayed `start`; Vitest already has its answer.
    if (isResponse(message, 'stopped')) this.stopPending = false
    if (isResponse(message, 'started')) {
      if (message.error) this.fail(message.error)
      return
    }
    if (isHostFsRequest(message)) {
      this.child?.ipc?.write(encodeV8(await serveHostFs(message, this.ctx.sharedDir)))
      return
    }
    if (this.lease) {
      const root = this.options.project.config.root
      const guestPath = (path: string) => (isAbsolute(path) ? path : resolve(root, path))
      for (const attachment of guestOnlyAttachments(message, (path) => existsSync(guestPath(path)))) {
        const bytes = await this.lease.sandbox.readFile(guestPath(attachment.path as string))
        localizeAttachment(attachment, bytes, this.ctx.guestFilesDir())
      }
    }
    const failed = failedTestsIn(message)
    if (failed.length && this.lease) {
      const annotations = vmLogAnnotations(this.lease.sandbox)
      // One at a time: reporters list annotations in the order they were recorded.
      for (const id of failed) for (const annotation of annotations) await this.call('onTaskArtifactRecord', [id, annotation])
    }
    this.events.emit('message', message)
  }

  /** A birpc call from this pool to Vitest, answered through send() (and not forwarded). */
  private call(method: string, args: unknown[]): Promise<void> {
    const i = `stereos-${++this.nextCall}`
    return new Promise<void>((resolve) => {
      this.calls.set(i, resolve)
      this.events.emit('message', { t: 'q', m: method, a: args, i })
    })
  }

  private died(why: string): void {
    // The pool shutting its VMs down at the end of the run is not a death.
    if (this.dead || this.stopping || this.ctx.pool.closing) return
    this.dead = true
    const lease = this.lease
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
      new HarnessError('AGENT_UNREACHABLE', `stereos pool: ${why} while running a test file${lease ? ` in VM ${lease.sandbox.info.id}. Last lines of its console:\n${tail(lease.sandbox.logs.serial).replace(/^/gm, '  ')}` : ''}`, {
        fix: lease ? `read ${lease.sandbox.logs.serial} (guest console) and ${lease.sandbox.logs.qemu}; the pool replaces the VM for the next file` : 'see the error above',
        logs,
      }),
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
