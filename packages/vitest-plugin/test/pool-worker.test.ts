import { EventEmitter } from 'node:events'
import { mkdtempSync, realpathSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Duplex, PassThrough } from 'node:stream'
import { encodeV8, V8Decoder } from '@stereos/harness/wire'
import type { PoolOptions } from 'vitest/node'
import { describe, expect, test } from 'vitest'
import { parseStereosOptions, type CaptureOption } from '../src/options.js'
import { CaptureBudget, captureDir, captureName } from '../src/pool/capture.js'
import { PoolContext } from '../src/pool/context.js'
import { VmLeasePool } from '../src/pool/lease-pool.js'
import { StereosPoolWorker } from '../src/pool/pool-worker.js'
import type { PoolProcess } from '../src/pool/vm.js'
import { FakeVm } from './support/fake-vm.js'

const root = realpathSync(mkdtempSync(join(tmpdir(), 'pool-worker-')))
const file = join(root, 'a.test.ts')
writeFileSync(file, "import { test } from 'vitest'\ntest('x', () => {})\n")

/** How the scripted guest process answers Vitest's requests. */
type Script = 'normal' | 'dies-on-run' | 'hangs-on-stop' | 'start-fails' | 'fails-a-test'

/** A guest process whose fd 3 is a pair of streams: frames in, frames out, as the agent carries them. */
class ScriptedProcess implements PoolProcess {
  readonly stdout = new PassThrough()
  readonly stderr = new PassThrough()
  readonly stdin = null
  readonly ipc: Duplex
  readonly pid = 4242
  readonly exited: Promise<{ exitCode: number | null; signal: string | null }>
  killed: string[] = []
  private exit!: (e: { exitCode: number | null; signal: string | null }) => void
  private readonly toHost = new PassThrough()

  constructor(script: Script) {
    this.exited = new Promise((r) => (this.exit = r))
    const decoder = new V8Decoder()
    const answer = (type: string) => this.toHost.write(encodeV8({ __vitest_worker_response__: true, type }))
    this.ipc = new Duplex({
      read: () => undefined,
      write: (chunk: Buffer, _enc, done) => {
        for (const m of decoder.push(chunk) as { type?: string }[]) {
          if (m.type === 'start' && script === 'start-fails') {
            // As Vitest's worker reports a failed environment setup: a serialized error, a plain object.
            const error = Object.assign(Object.create(null), {
              name: 'Error',
              message: "Cannot find package 'jsdom'",
              stack: "Error: Cannot find package 'jsdom'",
            })
            this.toHost.write(encodeV8({ __vitest_worker_response__: true, type: 'started', error }))
          } else if (m.type === 'start') answer('started')
          if (m.type === 'run' && script === 'fails-a-test') {
            // As Vitest's worker reports a failed test: onTaskUpdate (a birpc call), then the file's end.
            const packs = [['t-1', { state: 'fail', errors: [] }, {}]]
            this.toHost.write(encodeV8({ t: 'q', m: 'onTaskUpdate', a: [packs, [['t-1', 'test-finished', undefined]]], i: 'g-1' }))
          }
          if (m.type === 'run' && script === 'dies-on-run') this.end(137, 'SIGKILL')
          else if (m.type === 'run') answer('testfileFinished')
          if (m.type === 'stop' && script !== 'hangs-on-stop') {
            answer('stopped')
            setImmediate(() => this.end(0, null))
          }
        }
        done()
      },
    })
    this.toHost.on('data', (chunk: Buffer) => this.ipc.push(chunk))
  }

  private end(exitCode: number | null, signal: string | null): void {
    this.stdout.end()
    this.stderr.end()
    this.exit({ exitCode, signal })
  }

  async kill(signal = 'SIGTERM'): Promise<void> {
    this.killed.push(signal)
    this.end(null, signal)
  }

  async renice(): Promise<void> {}
}

/** A VM whose processes follow the script. */
class ScriptedVm extends FakeVm {
  readonly processes: ScriptedProcess[] = []

  constructor(private readonly script: Script) {
    super({ serial: join(root, 'serial.log'), qemu: join(root, 'qemu.log') })
  }

  protected override process(): ScriptedProcess {
    const p = new ScriptedProcess(this.script)
    this.processes.push(p)
    return p
  }
}

function setup(script: Script, capture: CaptureOption = { when: 'never', limit: 3 }, captureFails?: Error) {
  const vms: ScriptedVm[] = []
  const pool = new VmLeasePool(1, async () => {
    const vm = new ScriptedVm(script)
    vm.captureFails = captureFails
    vms.push(vm)
    return vm
  })
  const ctx = new PoolContext(pool, parseStereosOptions({ mixtape: 'fixture' }, 'stereos'), { roots: [root], project: root }, root)
  const lines: string[] = []
  const logger = { outputStream: new PassThrough(), errorStream: new PassThrough(), log: (l: string) => lines.push(l), error: (l: string) => lines.push(l) }
  const options = {
    project: {
      name: 'p',
      config: { root, env: {}, snapshotOptions: { updateSnapshot: 'none' } },
      vitest: { logger, config: { root }, version: '5.1.1', state: {} },
    },
    distPath: '/nowhere/dist',
    execArgv: [],
    env: {},
  } as unknown as PoolOptions
  const budget = new CaptureBudget(
    capture,
    () => join(root, 'captures'),
    (line) => lines.push(line),
  )
  const worker = new StereosPoolWorker(options, ctx, budget)
  const events = new EventEmitter()
  const seen: unknown[] = []
  const errors: Error[] = []
  worker.on('message', (m: unknown) => {
    seen.push(m)
    // Vitest answers every call (birpc): the guest's, and the pool's own.
    const call = m as { t?: string; i?: string }
    if (call.t === 'q' && call.i) setImmediate(() => worker.send({ t: 's', i: call.i } as never))
    events.emit('message', m)
  })
  worker.on('error', (e: Error) => errors.push(e))
  const next = (type: string) =>
    new Promise<void>((resolve) => {
      const on = (m: { type?: string }) => {
        if (m.type === type) {
          events.off('message', on)
          resolve()
        }
      }
      if (seen.some((m) => (m as { type?: string }).type === type)) return resolve()
      events.on('message', on)
    })
  const send = (type: string, extra: Record<string, unknown> = {}) => worker.send({ __vitest_worker_request__: true, type, ...extra } as never)
  return { worker, pool, vms, errors, next, send, seen, lines }
}

const runRequest = { context: { files: [{ filepath: file }] } }

describe('StereosPoolWorker against a scripted guest (no QEMU)', () => {
  test('start is answered at once; the first run leases a VM and replays start; stop ends the process and returns the VM', async () => {
    const { worker, pool, vms, errors, next, send } = setup('normal')
    send('start')
    await next('started')
    expect(vms).toHaveLength(0) // the VM is chosen by the first run, not by start
    send('run', runRequest)
    await next('testfileFinished')
    send('stop')
    await next('stopped')
    await worker.stop()
    expect(errors).toEqual([])
    expect(vms).toHaveLength(1)
    expect(vms[0]?.shutdowns).toBe(0) // back in the pool, warm
    await pool.close()
    expect(vms[0]?.shutdowns).toBe(1)
  })

  test('the guest process dying mid-file: one error naming it, stop answered for Vitest, the VM replaced', async () => {
    const { worker, pool, vms, errors, next, send } = setup('dies-on-run')
    send('start')
    send('run', runRequest)
    // The worker waits briefly for QEMU's exit to name the real cause, then reports.
    for (let i = 0; i < 100 && errors.length === 0; i++) await new Promise((r) => setTimeout(r, 100))
    expect(errors.map((e) => e.message.split('\n')[0])).toEqual([
      `stereos pool: the guest worker process exited (code 137, signal SIGKILL) while running a test file in VM ${vms[0]?.info.id}. Last lines of its console:`,
    ])
    send('stop')
    await next('stopped')
    await worker.stop()
    expect(vms[0]?.shutdowns).toBe(1) // a VM whose worker died is not lent again
    await pool.close()
  })

  test('a guest process that never answers stop is killed after 10 s and its VM replaced', async () => {
    const { worker, pool, vms, next, send } = setup('hangs-on-stop')
    send('start')
    send('run', runRequest)
    await next('testfileFinished')
    send('stop')
    await worker.stop()
    expect(vms[0]?.processes[0]?.killed).toEqual(['SIGKILL'])
    expect(vms[0]?.shutdowns).toBe(1)
    await pool.close()
  }, 20_000)

  test('a forced stop (Vitest sends no `stop` after a failed task) kills the process at once and keeps the VM warm', async () => {
    const { worker, pool, vms, send } = setup('hangs-on-stop')
    send('start')
    send('run', runRequest)
    for (let i = 0; i < 100 && !vms[0]?.processes.length; i++) await new Promise((r) => setTimeout(r, 20))
    await worker.stop()
    expect(vms[0]?.processes[0]?.killed).toEqual(['SIGKILL'])
    // Killed without the grace a `stop` gets, and not taken for a hung VM: it stays in the pool.
    expect(vms[0]?.shutdowns).toBe(0)
    await pool.close()
  })

  test("a guest worker that fails to start reports the guest's error, not a conversion error", async () => {
    const { worker, pool, errors, send } = setup('start-fails')
    send('start')
    send('run', runRequest)
    for (let i = 0; i < 100 && errors.length === 0; i++) await new Promise((r) => setTimeout(r, 20))
    expect(errors.map((e) => e.message)).toEqual(["Cannot find package 'jsdom'"])
    await worker.stop()
    await pool.close()
  })

  test('stop before any run: no VM is leased, and stop is answered locally', async () => {
    const { worker, vms, next, send } = setup('normal')
    send('start')
    send('stop')
    await next('stopped')
    await worker.stop()
    expect(vms).toHaveLength(0)
  })

  test("capture 'on-failure': a failed file's VM is captured before Vitest hears the file is done; the failed test's meta and annotation name the file; the VM is retired", async () => {
    const { worker, pool, vms, errors, next, send, seen, lines } = setup('fails-a-test', { when: 'on-failure', limit: 1 })
    send('start')
    await next('started')
    send('run', runRequest)
    await next('testfileFinished')
    const vm = vms[0] as ScriptedVm
    const path = join(root, 'captures', `a.test.ts-${vm.info.id}.stcap`)
    expect(vm.captures.map((c) => c.path)).toEqual([path])
    // Its process was ended before the save, and the capture names what debug needs.
    expect(vm.processes[0]?.killed).toEqual(['SIGKILL'])
    expect(vm.captures[0]?.context).toMatchObject({
      file: 'a.test.ts',
      failedTests: ['t-1'],
      root,
      checkout: root,
      view: [{ tag: 'share0', root }],
      testUser: vm.testUser,
    })
    const calls = seen.filter((m): m is { m: string; a: unknown[] } => (m as { t?: string }).t === 'q')
    const update = calls.find((c) => c.m === 'onTaskUpdate')
    expect((update?.a[0] as unknown[][] | undefined)?.[0]?.[2]).toMatchObject({ stereosCapture: { path } })
    const capture = calls.find((c) => c.m === 'onTaskArtifactRecord' && JSON.stringify(c.a).includes('stereos capture'))
    expect(capture?.a[0]).toBe('t-1')
    expect(JSON.stringify(capture?.a[1])).toContain(`npx stereos-harness debug`)
    // The annotation is recorded before testfileFinished reaches Vitest.
    expect(seen.indexOf(capture)).toBeLessThan(seen.findIndex((m) => (m as { type?: string }).type === 'testfileFinished'))
    expect(lines.some((l) => l.includes(`captured in`) && l.includes('a.test.ts'))).toBe(true)
    // isolate: false: the spent worker is not offered the next file.
    expect(worker.canReuse({ context: { files: [{ filepath: file }] } } as never)).toBe(false)
    send('stop')
    await worker.stop()
    expect(vm.shutdowns).toBe(1)
    expect(errors).toEqual([])
    await pool.close()
  })

  test('captures go beside the reports: capture.dir, else the first outputFile, else .vitest/stereos-captures; names flatten the file path', () => {
    const on = { when: 'on-failure', limit: 3 } as const
    const ci = { STEREOS_CAPTURE_DIR: '/runner/tmp/caps' }
    expect(captureDir({ ...on, dir: 'out/caps' }, { root: '/p', outputFile: 'r/junit.xml' }, ci)).toBe('/p/out/caps')
    expect(captureDir(on, { root: '/p', outputFile: 'r/junit.xml' }, ci)).toBe('/runner/tmp/caps')
    expect(captureDir(on, { root: '/p', outputFile: 'r/junit.xml' }, {})).toBe('/p/r/stereos-captures')
    expect(captureDir(on, { root: '/p', outputFile: { json: '/abs/r.json', junit: 'x/j.xml' } }, {})).toBe('/abs/stereos-captures')
    expect(captureDir(on, { root: '/p' }, { STEREOS_CAPTURE_DIR: '' })).toBe('/p/.vitest/stereos-captures')
    expect(captureName('/p', '/p/test/e2e/a b.test.ts', 'vm-1')).toBe('test_e2e_a_b.test.ts-vm-1.stcap')
    expect(captureName('/p', '/elsewhere/x.test.ts', 'vm-1')).toBe('elsewhere_x.test.ts-vm-1.stcap')
  })

  test('the capture limit: a second failing file is not captured, and the run says so once', async () => {
    const first = setup('fails-a-test', { when: 'on-failure', limit: 1 })
    const budget = new CaptureBudget(
      { when: 'on-failure', limit: 1 },
      () => join(root, 'captures'),
      (l) => first.lines.push(l),
    )
    expect(budget.reserve(root, file, 'vm-a')).toBe(join(root, 'captures', 'a.test.ts-vm-a.stcap'))
    expect(budget.reserve(root, file, 'vm-b')).toBeUndefined()
    expect(budget.reserve(root, file, 'vm-c')).toBeUndefined()
    expect(first.lines.filter((l) => l.includes('capture.limit'))).toHaveLength(1)
    expect(
      new CaptureBudget(
        { when: 'never', limit: 3 },
        () => root,
        () => undefined,
      ).reserve(root, file, 'vm-d'),
    ).toBeUndefined()
    await first.pool.close()
  })

  test('a capture that fails is reported in the annotation and the terminal; the file still finishes and the VM is retired', async () => {
    const failure = new Error('saving the VM failed: disk full')
    const { worker, pool, vms, errors, next, send, seen, lines } = setup('fails-a-test', { when: 'on-failure', limit: 5 }, failure)
    send('start')
    await next('started')
    send('run', runRequest)
    await next('testfileFinished')
    const vm = vms[0] as ScriptedVm
    expect(vm.calls.filter((c) => c.startsWith('capture '))).toHaveLength(1)
    expect(vm.captures).toEqual([])
    expect(JSON.stringify(seen)).toContain(`could not be captured: saving the VM failed: disk full`)
    expect(lines.some((l) => l.includes('could not be captured: saving the VM failed: disk full'))).toBe(true)
    send('stop')
    await worker.stop()
    // Its process was ended for the capture: the VM is shut down, not given to another file.
    expect(vm.shutdowns).toBeGreaterThanOrEqual(1)
    expect(vm.running).toBe(false)
    expect(errors).toEqual([])
    await pool.close()
  })
})
