import { randomBytes } from 'node:crypto'
import type { Readable } from 'node:stream'
import { HarnessError } from '../errors.js'
import type { Transport } from '../control/transport.js'
import { helloAsHost } from '../wire/hello.js'
import type { AgentInfo, ExitEvent, GuestStat } from '../wire/messages.js'
import { WirePeer } from '../wire/peer.js'
import { copyIn, copyOut, readFile, writeFile, type CopyOptions, type CopyReport, type ReadFileOptions, type WriteFileOptions } from './files.js'
import type { ExecBufferResult, ExecOptions, ExecResult, GuestProcess, ProcessExit, SpawnOptions } from './process.js'

const DEFAULT_MAX_BUFFER = 512 * 1024 * 1024

function ended(stream: Readable): Promise<void> {
  return new Promise<void>((resolve) => {
    if (stream.readableEnded || stream.destroyed) return resolve()
    stream.once('end', resolve)
    stream.once('close', resolve)
  })
}

/** A host's connection to the guest agent of one VM. */
export class AgentClient {
  private nextRef = 1
  private readonly exits = new Map<number, (exit: ExitEvent) => void>()

  private constructor(
    readonly info: AgentInfo,
    readonly peer: WirePeer,
  ) {}

  /** Connect and authenticate with the VM's token (one attempt; see waitForAgent for retries). */
  static async connect(transport: Transport, token: string, timeoutMs = 10_000): Promise<AgentClient> {
    const socket = await transport.connect(timeoutMs)
    try {
      const { info, decoder, leftover } = await helloAsHost(socket, token, timeoutMs)
      let client: AgentClient | undefined
      const peer = new WirePeer(socket, { onEvent: (name, data) => name === 'exit' && client?.onExit(data) }, leftover, decoder)
      client = new AgentClient(info, peer)
      socket.resume()
      return client
    } catch (err) {
      socket.destroy()
      throw err
    }
  }

  get closed(): boolean {
    return this.peer.isClosed
  }

  close(): void {
    this.peer.close()
  }

  /** Start a process in the guest and stream its output. */
  async spawn(cmd: string, args: string[] = [], options: SpawnOptions = {}): Promise<GuestProcess> {
    const ref = this.nextRef++
    const stdin = options.stdin ? this.peer.openChannel() : null
    const stdout = this.peer.openChannel().readOnly()
    const stderr = this.peer.openChannel().readOnly()
    const ipc = options.ipc ? this.peer.openChannel() : null
    const exit = new Promise<ExitEvent>((resolve) => this.exits.set(ref, resolve))
    let pid: number
    try {
      ;({ pid } = await this.peer.request('spawn', {
        ref,
        cmd,
        args,
        ...(options.env ? { env: options.env } : {}),
        ...(options.cwd ? { cwd: options.cwd } : {}),
        ...(options.user ? { user: options.user } : {}),
        ...(options.noNewPrivs ? { noNewPrivs: true } : {}),
        ...(options.nice !== undefined ? { nice: options.nice } : {}),
        ...(options.worker ? { worker: true } : {}),
        ...(stdin ? { stdin: stdin.id } : {}),
        stdout: stdout.id,
        stderr: stderr.id,
        ...(ipc ? { ipc: ipc.id } : {}),
      }))
    } catch (err) {
      this.exits.delete(ref)
      for (const channel of [stdin, stdout, stderr, ipc]) channel?.destroy()
      throw err
    }
    const lost = this.peer.closed.then((err) => {
      throw err ?? new HarnessError('AGENT_UNREACHABLE', `the agent connection closed while ${cmd} (pid ${pid}) was running`)
    })
    const exited: Promise<ProcessExit> = Promise.race([exit.then((e) => ({ exitCode: e.code, signal: e.signal })), lost])
    exited.catch(() => undefined)
    const peer = this.peer
    return {
      pid,
      stdin,
      stdout,
      stderr,
      ipc,
      exited,
      async kill(signal: NodeJS.Signals = 'SIGTERM') {
        await peer.request('kill', { ref, signal }).catch((err: unknown) => {
          // Already gone: nothing to kill.
          if (!(err instanceof HarnessError && /no running process/.test(err.message))) throw err
        })
      },
      async renice(nice: number) {
        await peer.request('renice', { ref, nice })
      },
    }
  }

  /**
   * SIGKILL every guest process of `uid` (real or effective) except `keepPid` and its descendants
   * (every one of them without `keepPid`): what earlier processes of that user left behind (a
   * `setsid` child outlives its parent's group). Root agents only; uid 0 is refused. Resolves to
   * the pids it killed.
   */
  async sweep(uid: number, keepPid?: number): Promise<number[]> {
    return (await this.peer.request('sweep', { uid, ...(keepPid !== undefined ? { keep: keepPid } : {}) })).killed
  }

  /**
   * SIGKILL every process in the cgroups of guest worker processes (spawned with `worker`) but
   * `keepPid`'s, whatever their uid (root's too), and remove those cgroups: what earlier workers
   * left behind, `setsid` children included. Resolves to the pids it found there; kills nothing on
   * a guest without cgroup2 (non-root workers start without a cgroup there: sweep their uid).
   */
  async sweepWorkers(keepPid?: number): Promise<number[]> {
    return (await this.peer.request('sweepWorkers', keepPid !== undefined ? { keep: keepPid } : {})).killed
  }

  /** Run a command to completion; a non-zero exit is a result, not an error. */
  async exec(cmd: string, args: string[] = [], options: ExecOptions = {}): Promise<ExecResult> {
    const result = await this.execBuffer(cmd, args, options)
    return { ...result, stdout: result.stdout.toString('utf8'), stderr: result.stderr.toString('utf8') }
  }

  /** exec with stdout/stderr as Buffers (binary-safe). */
  async execBuffer(cmd: string, args: string[] = [], options: ExecOptions = {}): Promise<ExecBufferResult> {
    const { input, timeoutMs, maxBuffer = DEFAULT_MAX_BUFFER, ...spawnOptions } = options
    const child = await this.spawn(cmd, args, { ...spawnOptions, stdin: input !== undefined })
    let failure: Error | undefined
    const fail = (err: Error) => {
      failure ??= err
      void child.kill('SIGKILL').catch(() => undefined)
    }
    const collect = (stream: Readable, name: string) => {
      const chunks: Buffer[] = []
      let size = 0
      stream.on('data', (chunk: Buffer) => {
        size += chunk.length
        if (size > maxBuffer)
          fail(
            new HarnessError('AGENT', `${cmd}: ${name} exceeded maxBuffer (${maxBuffer} bytes)`, {
              fix: 'raise maxBuffer, or use spawn() and read the stream',
            }),
          )
        else chunks.push(chunk)
      })
      return () => Buffer.concat(chunks)
    }
    const stdout = collect(child.stdout, 'stdout')
    const stderr = collect(child.stderr, 'stderr')
    child.stdin?.on('error', () => undefined)
    if (input !== undefined) child.stdin?.end(input)
    const timer =
      timeoutMs === undefined
        ? undefined
        : setTimeout(() => fail(new HarnessError('AGENT', `${cmd} ran longer than ${timeoutMs} ms and was killed`)), timeoutMs)
    try {
      const [exit] = await Promise.all([child.exited, ended(child.stdout), ended(child.stderr)])
      if (failure) throw failure
      return { ...exit, stdout: stdout(), stderr: stderr() }
    } finally {
      clearTimeout(timer)
    }
  }

  writeFile(path: string, data: string | Uint8Array, options?: WriteFileOptions): Promise<void> {
    return writeFile(this.peer, path, data, options)
  }

  /** Read a guest file into memory; over `maxBytes` (default 64 MiB) it is refused. */
  readFile(path: string, options?: ReadFileOptions): Promise<Buffer> {
    return readFile(this.peer, path, options)
  }

  /** Copy a host file or directory tree to `guestPath`; content the guest already has is not sent again. */
  copyIn(hostPath: string, guestPath: string, options?: CopyOptions): Promise<CopyReport> {
    return copyIn(this.peer, hostPath, guestPath, options)
  }

  /** Copy a guest file or directory tree to `hostPath`. */
  copyOut(guestPath: string, hostPath: string): Promise<CopyReport> {
    return copyOut(this.peer, guestPath, hostPath)
  }

  async stat(path: string): Promise<GuestStat | null> {
    return (await this.peer.request('stat', { path })).stat
  }

  async mkdir(path: string, options: { mode?: number; user?: 'agent' | 'root' } = {}): Promise<void> {
    await this.peer.request('mkdir', { path, ...options })
  }

  async remove(path: string): Promise<void> {
    await this.peer.request('remove', { path })
  }

  /** After a restore from a template: the guest's clock to ours, our randomness into its pool (root agents). */
  async resync(): Promise<{ clockSet: boolean; reason?: string }> {
    return this.peer.request('resync', { epochMs: Date.now(), entropy: randomBytes(64).toString('hex') })
  }

  private onExit(event: ExitEvent): void {
    const resolve = this.exits.get(event.ref)
    this.exits.delete(event.ref)
    resolve?.(event)
  }
}
