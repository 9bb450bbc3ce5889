import { writeFileSync } from 'node:fs'
import type { CaptureOptions, ExecOptions, KeptVm, SpawnOptions } from '@stereos/harness'
import type { PoolProcess, PoolVm } from '../../src/pool/vm.js'

let booted = 0

/**
 * A VM for the pool's unit tests: the PoolVm interface, nothing more, no QEMU. It records what it
 * is asked (`calls`), and its processes come from `process()`, which each test's subclass scripts.
 */
export class FakeVm implements PoolVm {
  readonly number = ++booted
  readonly info = {
    id: `vm-fake-${this.number}`,
    pid: 1,
    arch: 'x86_64' as const,
    accel: 'tcg' as const,
    timeline: [],
    mixtape: { ref: 'fixture', dir: '/mixtapes/fixture', version: undefined },
  }
  running = true
  readonly testUser = { uid: 1234, gid: 1234 }
  shutdowns = 0
  readonly calls: string[] = []
  readonly kept: string[] = []
  sweepFails: Error | undefined
  private quit: (exit: { code: number | undefined; signal: string | undefined }) => void = () => undefined
  readonly exited = new Promise<{ code: number | undefined; signal: string | undefined }>((resolve) => (this.quit = resolve))

  constructor(readonly logs: { serial: string; qemu: string } = { serial: '/nowhere/serial.log', qemu: '/nowhere/qemu.log' }) {}

  /** The process a spawn starts: each test's subclass scripts it. */
  protected process(_cmd: string, _args: string[], _options: SpawnOptions): PoolProcess {
    throw new Error('this fake VM starts no process')
  }

  async guestNode(): Promise<string> {
    return '/share/node'
  }

  async spawn(cmd: string, args: string[], options: SpawnOptions): Promise<PoolProcess> {
    const child = this.process(cmd, args, options)
    this.calls.push(`spawn ${child.pid} ${cmd} ${args.join(' ')}`)
    return child
  }

  async exec(cmd: string, args: string[], _options: ExecOptions): Promise<{ exitCode: number | null; stdout: string; stderr: string }> {
    this.calls.push(`exec ${cmd} ${args.join(' ')}`)
    return { exitCode: 0, stdout: '', stderr: '' }
  }

  async readFile(path: string): Promise<Buffer> {
    throw new Error(`${path}: no such file in the fake VM`)
  }

  async sweep(uid: number, keepPid: number): Promise<void> {
    this.calls.push(`sweep ${uid} keep ${keepPid}`)
    if (this.sweepFails) throw this.sweepFails
  }

  async shutdown(): Promise<unknown> {
    this.shutdowns++
    this.running = false
    this.quit({ code: 0, signal: undefined })
    return {}
  }

  keep(reason: string): KeptVm {
    this.kept.push(reason)
    return { id: this.info.id, pid: this.info.pid, vmDir: '/nowhere', arch: this.info.arch, mixtape: 'fixture', reason, keptAt: new Date(0).toISOString() }
  }

  readonly captures: { path: string; context: CaptureOptions['context'] }[] = []
  captureFails: Error | undefined

  /** As Sandbox.capture: the file is written and QEMU ends. */
  async capture(path: string, options: CaptureOptions) {
    this.calls.push(`capture ${path}`)
    if (this.captureFails) throw this.captureFails
    writeFileSync(path, 'a capture')
    this.captures.push({ path, context: options.context })
    this.running = false
    this.quit({ code: 0, signal: undefined })
    return { path, bytes: 9, ram: { included: true }, timings: { scrubMs: 1, saveMs: 1, totalMs: 2 } }
  }

  /** QEMU dies under the pool. */
  die(): void {
    this.running = false
    this.quit({ code: undefined, signal: 'SIGKILL' })
  }
}
