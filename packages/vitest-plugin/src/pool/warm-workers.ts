import type { GuestProcess, Sandbox } from '@stereos/harness'

/** How to start a guest worker process; processes with the same key are interchangeable. */
export interface WorkerSpec {
  key: string
  start(): Promise<GuestProcess>
}

interface Spare {
  key: string
  child: Promise<GuestProcess>
  alive: boolean
}

/**
 * One spare guest worker per VM. Importing Vitest's worker costs a guest process about 2 s of
 * CPU under TCG (four times its `node -e 1`), and Vitest's default `isolate: true` wants a fresh
 * process per file. So once a VM's current file has started, the next process is started too and
 * imports Vitest while the current file runs and while the host schedules the next one; the next
 * PoolWorker on that VM takes it ready (it waits, niced, for its `start`). A spare whose key does
 * not match (other env, execArgv or options) is killed and a fresh process started instead.
 */
export class SpareWorkers {
  private readonly spares = new WeakMap<Sandbox, Spare>()

  /** Start a spare on this VM unless it has one. */
  prepare(sandbox: Sandbox, spec: WorkerSpec): void {
    if (this.spares.has(sandbox) || !sandbox.running) return
    const spare: Spare = { key: spec.key, child: spec.start(), alive: true }
    this.spares.set(sandbox, spare)
    spare.child.then(
      (child) =>
        child.exited.then(
          () => this.drop(sandbox, spare),
          () => this.drop(sandbox, spare),
        ),
      () => this.drop(sandbox, spare),
    )
  }

  /** The VM's spare, if it is alive and interchangeable with `key`; a mismatched one is killed. */
  async take(sandbox: Sandbox, key: string): Promise<GuestProcess | undefined> {
    const spare = this.spares.get(sandbox)
    if (!spare) return undefined
    this.spares.delete(sandbox)
    const child = await spare.child.catch(() => undefined)
    if (!child || !spare.alive) return undefined
    if (spare.key !== key) {
      await child.kill('SIGKILL').catch(() => undefined)
      return undefined
    }
    return child
  }

  private drop(sandbox: Sandbox, spare: Spare): void {
    spare.alive = false
    if (this.spares.get(sandbox) === spare) this.spares.delete(sandbox)
  }
}
