import { describe, expect, test } from 'vitest'
import { accompany, type RunningQemu } from '../src/sandbox/qemu-start.js'
import type { QemuExit, QemuProcess } from '../src/vmm/qemu-process.js'

/** A QEMU handle whose exit the test decides, recording what was done to it. */
function fakeQemu(): { qemu: RunningQemu; calls: string[]; exit(): void } {
  const calls: string[] = []
  let exit!: (value: QemuExit) => void
  const process: QemuProcess = {
    pid: 4242,
    exit: undefined,
    exited: new Promise<QemuExit>((resolve) => (exit = resolve)),
    kill: () => undefined,
    unref: () => calls.push('qemu.unref'),
  }
  return { qemu: { process, qmp: new Promise(() => undefined), died: new AbortController().signal }, calls, exit: () => exit({ code: 0, signal: undefined }) }
}

describe('accompany: what the harness runs beside a QEMU follows it (#20)', () => {
  test('unref of QEMU (Sandbox.detach) lets go of the companion too; it is not stopped', () => {
    const { qemu, calls } = fakeQemu()
    accompany(qemu, { stop: () => calls.push('companion.stop'), unref: () => calls.push('companion.unref') })
    qemu.process.unref()
    expect(calls).toEqual(['qemu.unref', 'companion.unref'])
  })

  test("QEMU's exit stops the companion", async () => {
    const { qemu, calls, exit } = fakeQemu()
    accompany(qemu, { stop: () => calls.push('companion.stop'), unref: () => calls.push('companion.unref') })
    exit()
    await qemu.process.exited
    await Promise.resolve()
    expect(calls).toEqual(['companion.stop'])
  })
})
