import { existsSync } from 'node:fs'
import { setTimeout as sleep } from 'node:timers/promises'
import { HarnessError } from '../errors.js'
import type { QemuProcess } from './qemu-process.js'
import { QmpClient } from './qmp.js'

/** QEMU creates the QMP socket a moment after it starts; wait for it while QEMU lives. */
export async function connectQmp(path: string, qemu: QemuProcess, timeoutMs = 10_000): Promise<QmpClient> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (qemu.exit) throw new HarnessError('QMP', `QEMU exited before its QMP socket ${path} could be used`)
    if (existsSync(path)) {
      try {
        return await QmpClient.connect(path)
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ECONNREFUSED') throw err
      }
    }
    await sleep(20)
  }
  throw new HarnessError('QMP', `QMP socket ${path} did not accept a connection within ${timeoutMs} ms`)
}
