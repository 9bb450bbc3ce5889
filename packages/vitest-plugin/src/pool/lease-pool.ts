import { isHarnessError, type BootPlan } from '@stereos/harness'
import type { PoolVm } from './vm.js'

/** A VM lent to one PoolWorker at a time. */
export interface Lease<V extends PoolVm = PoolVm> {
  readonly vm: V
  /** The options key the VM was booted with. */
  readonly key: string
  /** Files this VM has run, for the boot-count ratio the tests and bench read. */
  files: number
}

/** Boots a ready VM (the pool's: Sandbox.boot plus the project view); injected so tests need no QEMU. */
export type BootVm<V extends PoolVm = PoolVm> = (plan: BootPlan) => Promise<V>

interface Slot<V extends PoolVm> {
  lease: Lease<V>
  busy: boolean
}

/** Boot failures worth one more try: the guest died or stalled (e.g. a TCG timer panic under load), not bad input. */
function transient(err: unknown): boolean {
  return (
    isHarnessError(err, 'QEMU_EXITED') ||
    isHarnessError(err, 'BOOT_TIMEOUT') ||
    isHarnessError(err, 'AGENT_UNREACHABLE') ||
    isHarnessError(err, 'CONTROL_PLANE')
  )
}

/**
 * Warm VMs, reused across test files: VM lifetime is not PoolWorker lifetime (Vitest makes one
 * PoolWorker per file). At most `max` VMs exist at once (= maxWorkers); a lease for options
 * nobody idle was booted with replaces an idle VM of another kind.
 */
export class VmLeasePool<V extends PoolVm = PoolVm> {
  private readonly slots = new Set<Slot<V>>()
  private readonly booting = new Set<Promise<unknown>>()
  private readonly waiters: (() => void)[] = []
  private closed = false
  /** VMs booted so far, and test files run in them: reported when the pool closes. */
  boots = 0
  files = 0

  constructor(
    private readonly max: number,
    private readonly bootVm: BootVm<V>,
    private readonly log: (line: string) => void = () => undefined,
  ) {}

  async lease(key: string, options: BootPlan): Promise<Lease<V>> {
    for (;;) {
      if (this.closed) throw new Error('the stereos VM pool is closed')
      // A VM that died while idle is dropped, never lent.
      for (const slot of [...this.slots]) if (!slot.busy && !slot.lease.vm.running) this.slots.delete(slot)
      const idle = [...this.slots].find((s) => !s.busy && s.lease.key === key)
      if (idle) {
        idle.busy = true
        return idle.lease
      }
      if (this.slots.size + this.booting.size < this.max) return this.boot(key, options)
      const other = [...this.slots].find((s) => !s.busy)
      if (other) {
        this.slots.delete(other)
        await other.lease.vm.shutdown()
        continue
      }
      await new Promise<void>((resolve) => this.waiters.push(resolve))
    }
  }

  /** Give a VM back; `discard` (a dead VM, or isolation 'vm') shuts it down instead of keeping it. */
  async release(lease: Lease<V>, discard = false): Promise<void> {
    const slot = [...this.slots].find((s) => s.lease === lease)
    if (!slot) return
    if (discard || this.closed) {
      this.slots.delete(slot)
      await lease.vm.shutdown({ timeoutMs: 10_000 }).catch(() => undefined)
    } else {
      slot.busy = false
    }
    this.waiters.shift()?.()
  }

  /** Take a VM out of the pool for good, running (keepVm): its slot frees for another VM. */
  forget(lease: Lease<V>): void {
    const slot = [...this.slots].find((s) => s.lease === lease)
    if (!slot) return
    this.slots.delete(slot)
    this.waiters.shift()?.()
  }

  /** True once close() began: VMs going down now are not failures. */
  get closing(): boolean {
    return this.closed
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    if (this.boots) this.log(`${this.files} test file(s) ran in ${this.boots} VM boot(s)`)
    await Promise.allSettled([...this.booting])
    const all = [...this.slots]
    this.slots.clear()
    // Vitest gives onClose handlers 10 s in all: graceful first, then QMP and signals.
    await Promise.allSettled(all.map((s) => s.lease.vm.shutdown({ timeoutMs: 3_000 })))
    for (const wake of this.waiters.splice(0)) wake()
  }

  /** Boot, and once more when the guest died or stalled on the way (one log line); bad input fails at once. */
  private async bootOnce(options: BootPlan): Promise<V> {
    this.boots++
    try {
      return await this.bootVm(options)
    } catch (err) {
      if (!transient(err) || this.closed) throw err
      this.log(`a VM boot failed (${(err as Error).message.split('\n')[0]}); booting once more`)
      this.boots++
      return await this.bootVm(options)
    }
  }

  private async boot(key: string, options: BootPlan): Promise<Lease<V>> {
    const booting = this.bootOnce(options)
    this.booting.add(booting)
    try {
      const vm = await booting
      const lease: Lease<V> = { vm, key, files: 0 }
      this.slots.add({ lease, busy: true })
      if (this.closed) {
        await this.release(lease, true)
        throw new Error('the stereos VM pool closed while a VM booted')
      }
      return lease
    } finally {
      this.booting.delete(booting)
      this.waiters.shift()?.()
    }
  }
}
