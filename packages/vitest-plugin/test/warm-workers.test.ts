import { PassThrough } from 'node:stream'
import { HarnessError, type SpawnOptions } from '@stereos/harness'
import { describe, expect, test } from 'vitest'
import type { PoolProcess } from '../src/pool/vm.js'
import { guestWorkerSpec, SpareWorkers } from '../src/pool/warm-workers.js'
import { FakeVm } from './support/fake-vm.js'

/** A VM whose processes record what the worker spec asks of them, in order. */
class WorkerVm extends FakeVm {
  nextPid = 100
  readonly spawned: SpawnOptions[] = []

  protected override process(_cmd: string, _args: string[], options: SpawnOptions): PoolProcess {
    const pid = this.nextPid++
    this.spawned.push(options)
    let exit: () => void = () => undefined
    const exited = new Promise<{ exitCode: number | null; signal: string | null }>((resolve) => (exit = () => resolve({ exitCode: null, signal: 'SIGKILL' })))
    let dead = false
    return {
      pid,
      stdin: null,
      stdout: new PassThrough(),
      stderr: new PassThrough(),
      ipc: null,
      exited,
      kill: async (signal = 'SIGTERM') => {
        this.calls.push(`kill ${pid} ${signal}`)
        dead = true
        exit()
      },
      renice: async (nice: number) => {
        if (dead) throw new HarnessError('AGENT', `no running process with ref ${pid}`)
        this.calls.push(`renice ${pid} ${nice}`)
      },
    }
  }
}

const USER = { uid: 1000, gid: 100 }
const ARGS = ['/entry.js']

describe('guest worker processes: identity, priority and the sweep (no QEMU: a fake VM)', () => {
  test('a spare starts as the host uid/gid under no_new_privs, as a worker (a cgroup of its own), at nice 19; taken, the VM is swept (keeping it), then it is reniced to 0', async () => {
    const vm = new WorkerVm()
    const spares = new SpareWorkers()
    const spec = spares.spec(vm, USER, ARGS, { ipc: true, cwd: '/p' })
    spares.prepare(vm, spec)
    const child = await spares.take(vm, spec.key)
    expect(child?.pid).toBe(100)
    expect(vm.spawned).toEqual([{ ipc: true, cwd: '/p', user: USER, noNewPrivs: true, worker: true, nice: 19 }])
    expect(vm.calls).toEqual(['spawn 100 /share/node /entry.js', 'sweep 1000 keep 100', 'renice 100 0'])
  })

  test('a process started for a file at once runs at normal priority, swept before it is returned', async () => {
    const vm = new WorkerVm()
    const spec = guestWorkerSpec(vm, USER, ARGS, { ipc: true })
    const child = await spec.start()
    expect(vm.spawned).toEqual([{ ipc: true, user: USER, noNewPrivs: true, worker: true }])
    expect(vm.calls).toEqual([`spawn ${child.pid} /share/node /entry.js`, `sweep 1000 keep ${child.pid}`])
  })

  test('a root host user stays root in the guest, still a worker under no_new_privs and niced, and swept like any other (the VM sweeps its cgroups only)', async () => {
    const vm = new WorkerVm()
    const spares = new SpareWorkers()
    const spec = spares.spec(vm, { uid: 0, gid: 0 }, ARGS, {})
    spares.prepare(vm, spec)
    await spares.take(vm, spec.key)
    await spec.start()
    expect(vm.spawned).toEqual([
      { user: 'root', noNewPrivs: true, worker: true, nice: 19 },
      { user: 'root', noNewPrivs: true, worker: true },
    ])
    expect(vm.calls).toEqual(['spawn 100 /share/node /entry.js', 'sweep 0 keep 100', 'renice 100 0', 'spawn 101 /share/node /entry.js', 'sweep 0 keep 101'])
  })

  test('a spare whose key differs is killed, never swept for or reniced', async () => {
    const vm = new WorkerVm()
    const spares = new SpareWorkers()
    spares.prepare(vm, guestWorkerSpec(vm, USER, ARGS, { env: { A: '1' } }))
    const other = guestWorkerSpec(vm, USER, ARGS, { env: { A: '2' } })
    expect(await spares.take(vm, other.key)).toBeUndefined()
    expect(vm.calls).toEqual(['spawn 100 /share/node /entry.js', 'kill 100 SIGKILL'])
  })

  test('a failed sweep kills the process and fails its file, spare or fresh', async () => {
    const vm = new WorkerVm()
    vm.sweepFails = new HarnessError('AGENT', 'sweep of uid 1000: processes 7 are still alive after SIGKILL')
    const spares = new SpareWorkers()
    const spec = spares.spec(vm, USER, ARGS, {})
    spares.prepare(vm, spec)
    await expect(spares.take(vm, spec.key)).rejects.toThrow(/still alive after SIGKILL/)
    await expect(spec.start()).rejects.toThrow(/still alive after SIGKILL/)
    expect(vm.calls.filter((c) => c.startsWith('kill'))).toEqual(['kill 100 SIGKILL', 'kill 101 SIGKILL'])
  })

  test('a spare that died before its hand-over is no error: the file gets a fresh process', async () => {
    const vm = new WorkerVm()
    const spares = new SpareWorkers()
    const spec = spares.spec(vm, USER, ARGS, {})
    const spawned = vm.spawn.bind(vm)
    // The spare is gone by the time it is taken; the agent has not said so yet.
    vm.spawn = async (...a) => {
      const child = await spawned(...a)
      await child.kill('SIGKILL')
      return { ...child, exited: new Promise(() => undefined) }
    }
    spares.prepare(vm, spec)
    expect(await spares.take(vm, spec.key)).toBeUndefined()
    expect(vm.calls).toEqual(['spawn 100 /share/node /entry.js', 'kill 100 SIGKILL', 'sweep 1000 keep 100', 'kill 100 SIGKILL'])
  })
})
