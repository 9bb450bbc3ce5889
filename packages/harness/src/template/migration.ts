import { HarnessError } from '../errors.js'
import { sleep } from '../host/sleep.js'
import type { QmpClient } from '../vmm/qmp.js'

/**
 * QEMU 7.2 (Debian 12) has no `file:` migration URI, so the stream goes through zstd: QEMU runs
 * `exec:` commands with /bin/sh, the stream on the command's stdout (save) or stdin (restore).
 */
export function saveUri(state: string): string {
  return `exec:zstd -q -1 -T0 -o ${shellQuote(state)}`
}

/** `-incoming` for a restore: QEMU starts paused at the saved state once the stream is read. */
export function incomingArgs(state: string): string[] {
  return ['-incoming', `exec:zstd -q -dc ${shellQuote(state)}`]
}

function shellQuote(text: string): string {
  return `'${text.replaceAll("'", `'\\''`)}'`
}

interface MigrateInfo {
  status?: string
  'error-desc'?: string
}

/**
 * Pause the guest and write its RAM and device state to `state`. Pausing first makes the stream
 * one pass (no dirty pages to chase) and keeps the disk still while it is saved with it.
 */
export async function saveState(qmp: QmpClient, state: string, timeoutMs: number): Promise<void> {
  await qmp.execute('stop')
  await qmp.execute('migrate', { uri: saveUri(state) })
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const info = await qmp.execute<MigrateInfo>('query-migrate')
    if (info.status === 'completed') return
    if (info.status === 'failed' || info.status === 'cancelled') {
      throw new HarnessError('TEMPLATE', `saving the VM failed: ${info['error-desc'] ?? info.status}`, {
        fix: 'boots go on without a template; run with DEBUG=stereos:boot and read qemu.log for why',
      })
    }
    if (Date.now() > deadline) throw new HarnessError('TEMPLATE', `saving the VM did not finish within ${timeoutMs} ms (status ${info.status ?? 'none'})`)
    await sleep(25)
  }
}

/**
 * Wait until an `-incoming` QEMU has read the whole stream, then run the guest. The saved guest
 * was paused, so the restored one waits for `cont`. A stream that cannot be loaded makes QEMU
 * exit; `died` says so.
 */
export async function resumeRestored(qmp: QmpClient, died: AbortSignal, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (died.aborted) throw died.reason
    const { status, running } = await qmp.queryStatus()
    if (running) return
    if (status !== 'inmigrate') {
      await qmp.execute('cont')
      return
    }
    if (Date.now() > deadline) throw new HarnessError('TEMPLATE', `the saved state was not loaded within ${timeoutMs} ms`)
    await sleep(20)
  }
}
