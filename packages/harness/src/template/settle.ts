import { sleep } from '../host/sleep.js'
import { processCpuSeconds } from '../host/process.js'

export interface SettleOptions {
  /** Length of each measurement window. */
  windowMs?: number
  /** The guest counts as settled below this share of one core, over one window. */
  idleShare?: number
  /** Give up waiting (and save anyway) after this long. */
  maxMs?: number
}

/**
 * Wait until the guest has finished booting: stereosd answers `ready` while the rest of the
 * guest (sshd, agentd, their runtimes) is still starting, and a template saved then makes every
 * restore finish that work again. QEMU's own CPU time is the one signal every guest gives: a
 * guest with nothing left to do halts its vCPUs, under TCG and KVM alike. Returns how long it
 * waited, and whether the guest went idle before `maxMs`.
 */
export async function waitGuestIdle(qemuPid: number, options: SettleOptions = {}): Promise<{ waitedMs: number; idle: boolean }> {
  const { windowMs = 500, idleShare = 0.15, maxMs = 30_000 } = options
  const began = performance.now()
  let last = processCpuSeconds(qemuPid)
  while (last !== undefined && performance.now() - began < maxMs) {
    await sleep(windowMs)
    const now = processCpuSeconds(qemuPid)
    if (now === undefined) break
    const share = (now - last) / (windowMs / 1000)
    last = now
    if (share < idleShare) return { waitedMs: Math.round(performance.now() - began), idle: true }
  }
  return { waitedMs: Math.round(performance.now() - began), idle: false }
}
