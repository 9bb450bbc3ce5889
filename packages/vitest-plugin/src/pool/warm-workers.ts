import type { SpawnOptions } from '@stereos/harness'
import type { PoolProcess, PoolVm } from './vm.js'
import type { Identity } from './test-user.js'

/** How to start a guest worker process; processes with the same key are interchangeable. */
export interface WorkerSpec {
  key: string
  /**
   * Start a process. A `spare` waits, at low priority, for a file that is not yet chosen; any other
   * is handed its file at once, so `start` has made it ready for it (see `handOver`).
   */
  start(spare?: boolean): Promise<PoolProcess>
  /**
   * Ready a spare for its file, before its first frame: nothing an earlier file left running in the
   * VM survives (the agent's sweep of the test user's processes), and it runs at normal priority.
   */
  handOver(child: PoolProcess): Promise<void>
}

/**
 * The spec of a guest worker process run as the VM's test user `who` (test-user.ts): that uid/gid
 * with no supplementary groups and no_new_privs (sudo and the like cannot raise it), so nothing of
 * a test file runs as root, in a cgroup of its own (a `worker`) that nothing it starts can leave.
 * Before its first frame, every process an earlier file left in the VM is killed (the sweep:
 * other workers' cgroups, and every other process of `who.uid`, keeping this process's), and a
 * spare is back at normal priority.
 *
 * A test user of root (only when the config's `testUser` says so) keeps no_new_privs and the same
 * priorities; its sweep is the cgroups' only (a sweep of uid 0 would kill the agent). A root
 * worker needs cgroup2 in the guest.
 */
export function guestWorkerSpec(vm: PoolVm, who: Identity, args: string[], options: Omit<SpawnOptions, 'user' | 'noNewPrivs' | 'nice' | 'worker'>): WorkerSpec {
  const spawnOptions: SpawnOptions = { ...options, user: who.uid === 0 ? 'root' : { uid: who.uid, gid: who.gid }, noNewPrivs: true, worker: true }
  const sweep = (child: PoolProcess) => vm.sweep(who.uid, child.pid)
  return {
    key: JSON.stringify({ args, options: spawnOptions }),
    async start(spare = false) {
      const child = await vm.spawn(await vm.guestNode(), args, spare ? { ...spawnOptions, nice: 19 } : spawnOptions)
      if (spare) return child
      try {
        await sweep(child)
      } catch (err) {
        await child.kill('SIGKILL').catch(() => undefined)
        throw err
      }
      return child
    },
    async handOver(child) {
      await sweep(child)
      await child.renice(0)
    },
  }
}

interface Spare {
  spec: WorkerSpec
  child: Promise<PoolProcess>
  alive: boolean
}

/**
 * One spare guest worker per VM. Importing Vitest's worker costs a guest process about 2 s of
 * CPU under TCG (four times its `node -e 1`), and Vitest's default `isolate: true` wants a fresh
 * process per file. So once a VM's current file has started, the next process is started too and
 * imports Vitest while the current file runs and while the host schedules the next one; the next
 * PoolWorker on that VM takes it ready (it waits, at nice 19, for its `start`). A spare whose key
 * does not match (other env, execArgv or options) is killed and a fresh process started instead.
 */
export class SpareWorkers {
  private readonly spares = new WeakMap<PoolVm, Spare>()

  /** The spec of guest worker processes run as `who` on `sandbox` (guestWorkerSpec). */
  spec(vm: PoolVm, who: Identity, args: string[], options: Omit<SpawnOptions, 'user' | 'noNewPrivs' | 'nice'>): WorkerSpec {
    return guestWorkerSpec(vm, who, args, options)
  }

  /** Start a spare on this VM unless it has one. */
  prepare(vm: PoolVm, spec: WorkerSpec): void {
    if (this.spares.has(vm) || !vm.running) return
    const spare: Spare = { spec, child: spec.start(true), alive: true }
    this.spares.set(vm, spare)
    spare.child.then(
      (child) =>
        child.exited.then(
          () => this.drop(vm, spare),
          () => this.drop(vm, spare),
        ),
      () => this.drop(vm, spare),
    )
  }

  /**
   * The VM's spare, if it is alive and interchangeable with `key`, handed over (see
   * WorkerSpec.handOver); a mismatched one is killed. A failed hand-over kills the spare and
   * rejects: the VM may still run what an earlier file left behind.
   */
  async take(vm: PoolVm, key: string): Promise<PoolProcess | undefined> {
    const spare = this.spares.get(vm)
    if (!spare) return undefined
    this.spares.delete(vm)
    const child = await spare.child.catch(() => undefined)
    if (!child || !spare.alive) return undefined
    if (spare.spec.key !== key) {
      await child.kill('SIGKILL').catch(() => undefined)
      return undefined
    }
    try {
      await spare.spec.handOver(child)
    } catch (err) {
      // A spare that died on its own meanwhile is no reason to fail the file: start a fresh one.
      const died = !spare.alive || /no running process/.test((err as Error).message)
      await child.kill('SIGKILL').catch(() => undefined)
      if (died) return undefined
      throw err
    }
    return child
  }

  /** Kill the VM's spare, if it has one (its VM is about to be captured or retired). */
  async discard(vm: PoolVm): Promise<void> {
    const spare = this.spares.get(vm)
    if (!spare) return
    this.spares.delete(vm)
    const child = await spare.child.catch(() => undefined)
    await child?.kill('SIGKILL').catch(() => undefined)
  }

  private drop(vm: PoolVm, spare: Spare): void {
    spare.alive = false
    if (this.spares.get(vm) === spare) this.spares.delete(vm)
  }
}
