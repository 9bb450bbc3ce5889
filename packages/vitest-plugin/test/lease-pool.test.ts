import { HarnessError, planBoot } from '@stereos/harness'
import { describe, expect, test } from 'vitest'
import { VmLeasePool } from '../src/pool/lease-pool.js'
import { FakeVm } from './support/fake-vm.js'

/** The pool never looks inside what it boots with. */
const plan = planBoot({})
function pool(max: number, boot: () => Promise<FakeVm> = async () => new FakeVm()) {
  const lines: string[] = []
  const boots: FakeVm[] = []
  const p = new VmLeasePool(
    max,
    async () => {
      const vm = await boot()
      boots.push(vm)
      return vm
    },
    (line) => lines.push(line),
  )
  return { pool: p, lines, boots }
}

describe('VM lease pool (no QEMU: the boot function is injected)', () => {
  test('lends at most max VMs, reuses an idle one with the same key, and wakes a waiter on release', async () => {
    const { pool: p, boots } = pool(2)
    const a = await p.lease('k', plan)
    const b = await p.lease('k', plan)
    expect(boots).toHaveLength(2)
    let third: Awaited<ReturnType<typeof p.lease>> | undefined
    const waiting = p.lease('k', plan).then((lease) => (third = lease))
    await new Promise((r) => setTimeout(r, 10))
    expect(third).toBeUndefined()
    await p.release(a)
    await waiting
    expect(third?.vm).toBe(a.vm)
    expect(boots).toHaveLength(2)
    await p.release(b)
    await p.close()
  })

  test('a lease for other options replaces an idle VM; a discarded or dead VM is never lent again', async () => {
    const { pool: p, boots } = pool(1)
    const a = await p.lease('one', plan)
    await p.release(a)
    const b = await p.lease('two', plan)
    expect(a.vm.shutdowns).toBe(1)
    expect(b.vm).not.toBe(a.vm)
    await p.release(b, true)
    expect(b.vm.shutdowns).toBe(1)
    const c = await p.lease('two', plan)
    expect(c.vm).not.toBe(b.vm)
    await p.release(c)
    c.vm.running = false // died while idle
    const d = await p.lease('two', plan)
    expect(d.vm).not.toBe(c.vm)
    expect(boots).toHaveLength(4)
    await p.close()
  })

  test('closing while a VM boots: the boot finishes, its VM is shut down, the lease fails', async () => {
    let finish!: () => void
    const gate = new Promise<void>((r) => (finish = r))
    const { pool: p, boots } = pool(1, async () => {
      await gate
      return new FakeVm()
    })
    const leasing = p.lease('k', plan)
    const closing = p.close()
    finish()
    await expect(leasing).rejects.toThrow(/closed while a VM booted/)
    await closing
    expect(boots[0]?.shutdowns).toBe(1)
    await expect(p.lease('k', plan)).rejects.toThrow(/closed/)
  })

  test('a boot whose guest died or stalled is tried once more, with one log line; bad input is not', async () => {
    let calls = 0
    const flaky = pool(1, async () => {
      if (++calls === 1) throw new HarnessError('QEMU_EXITED', 'QEMU exited with code 0 before the guest was ready')
      return new FakeVm()
    })
    const lease = await flaky.pool.lease('k', plan)
    expect(lease.vm).toBeDefined()
    expect(calls).toBe(2)
    expect(flaky.lines).toEqual(['a VM boot failed (QEMU exited with code 0 before the guest was ready); booting once more'])
    await flaky.pool.close()
    expect(flaky.lines.at(-1)).toBe('0 test file(s) ran in 2 VM boot(s)')

    let bad = 0
    const invalid = pool(1, async () => {
      bad++
      throw new HarnessError('INVALID_OPTIONS', 'options.resources.memory: expected a size')
    })
    await expect(invalid.pool.lease('k', plan)).rejects.toThrow(/expected a size/)
    expect(bad).toBe(1)
    expect(invalid.lines).toEqual([])
    await invalid.pool.close()
  })
})
