import { setTimeout as sleep } from 'node:timers/promises'
import type { StereosdClient } from '../control/client.js'
import type { QemuProcess } from '../vmm/qemu-process.js'
import type { QmpClient } from '../vmm/qmp.js'

/** Which step of the shutdown ladder stopped the VM. */
export type StoppedBy = 'already-exited' | 'control-plane' | 'qmp-powerdown' | 'sigterm' | 'sigkill'

export interface ShutdownSteps {
  qemu: QemuProcess
  control: () => Promise<StereosdClient>
  qmp: () => Promise<QmpClient>
  /** How long each graceful step may take before the next one (mb: 30 s for `mb down`). */
  timeoutMs: number
  reason: string
  log: (line: string) => void
}

/**
 * mb's `down` ladder (STEREOS-FACTS §1.11): stereosd `shutdown` and wait; QMP
 * `system_powerdown` and wait; SIGTERM, 1 s; SIGKILL. Each step is tried only if the one
 * before did not end QEMU, and a failing step is logged, never thrown: shutdown always ends
 * with QEMU gone.
 */
export async function stopVm(steps: ShutdownSteps): Promise<StoppedBy> {
  const { qemu } = steps
  if (qemu.exit) return 'already-exited'
  // Unref'd: a finished shutdown must not keep the caller's process alive until the timer fires.
  const exitedWithin = (ms: number) => Promise.race([qemu.exited.then(() => true), sleep(ms, false, { ref: false })])

  try {
    const client = await steps.control()
    await client.shutdown(steps.reason, { timeoutMs: Math.min(steps.timeoutMs, 10_000) })
    if (await exitedWithin(steps.timeoutMs)) return 'control-plane'
    steps.log(`guest acked shutdown but QEMU still runs after ${steps.timeoutMs} ms; trying ACPI powerdown`)
  } catch (err) {
    if (qemu.exit) return 'control-plane'
    steps.log(`control-plane shutdown failed (${(err as Error).message}); trying ACPI powerdown`)
  }

  try {
    const qmp = await steps.qmp()
    await qmp.execute('system_powerdown')
    if (await exitedWithin(steps.timeoutMs)) return 'qmp-powerdown'
    steps.log(`QEMU ignored system_powerdown for ${steps.timeoutMs} ms; sending SIGTERM`)
  } catch (err) {
    if (qemu.exit) return 'qmp-powerdown'
    steps.log(`QMP powerdown failed (${(err as Error).message}); sending SIGTERM`)
  }

  qemu.kill('SIGTERM')
  if (await exitedWithin(1_000)) return 'sigterm'
  qemu.kill('SIGKILL')
  await qemu.exited
  return 'sigkill'
}
