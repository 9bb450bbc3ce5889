import { sleep } from '../host/sleep.js'
import { HarnessError } from '../errors.js'
import { StereosdClient } from './client.js'
import type { HealthPayload } from './messages.js'
import type { Transport } from './transport.js'

export interface WaitReadyOptions {
  /** Absolute time (Date.now()) by which stereosd must be ready. */
  deadline: number
  /** Aborted when waiting is pointless (QEMU exited); the abort reason is thrown. */
  signal?: AbortSignal
  /** Called once per connection attempt, for the boot timeline and logs. */
  onAttempt?: (attempt: number, error?: Error) => void
}

export interface Ready {
  client: StereosdClient
  health: HealthPayload
  attempts: number
}

/** mb's dial backoff: 100 ms doubling to a 1 s cap (STEREOS-FACTS §1.9). */
export function backoffMs(attempt: number): number {
  return Math.min(100 * 2 ** attempt, 1_000)
}

const POLL_MS = 200
const DIAL_TIMEOUT_MS = 2_000

/**
 * Connect to stereosd and poll get_health until it is `ready` or `healthy` (mb's
 * connect-then-WaitForReady, as one loop). Readiness is an answered request, never an accepted
 * connection: through SLIRP the host's connect succeeds before the guest listens.
 */
export async function waitReady(transport: Transport, options: WaitReadyOptions): Promise<Ready> {
  const { deadline, signal } = options
  let client: StereosdClient | undefined
  let failures = 0
  let attempts = 0
  let lastError: Error | undefined

  /** One health poll; transient failures (refused, reset, timeout, garbage) come back as errors. */
  const poll = async (): Promise<HealthPayload | Error> => {
    const timeoutMs = Math.max(1, Math.min(DIAL_TIMEOUT_MS, deadline - Date.now()))
    try {
      if (!client || client.closed) {
        attempts++
        client = await StereosdClient.open(transport, timeoutMs)
      }
      return await client.health({ timeoutMs })
    } catch (err) {
      if (err instanceof HarnessError && err.code !== 'CONTROL_PLANE' && err.code !== 'PROTOCOL') throw err
      client?.close()
      client = undefined
      return err as Error
    }
  }

  try {
    while (Date.now() < deadline) {
      signal?.throwIfAborted()
      const health = await poll()
      signal?.throwIfAborted()
      if (health instanceof Error) {
        lastError = health
        options.onAttempt?.(attempts, health)
        await sleep(Math.min(backoffMs(failures++), Math.max(0, deadline - Date.now())), signal)
        continue
      }
      if (health.state === 'ready' || health.state === 'healthy') {
        const ready: Ready = { client: client!, health, attempts }
        client = undefined
        return ready
      }
      if (health.state === 'shutdown') {
        throw new HarnessError('CONTROL_PLANE', 'stereosd reports state "shutdown" while the harness waits for ready', {
          fix: 'see serial.log for why the guest is shutting down',
        })
      }
      await sleep(POLL_MS, signal)
    }
  } finally {
    client?.close()
  }
  throw new HarnessError(
    'BOOT_TIMEOUT',
    `stereosd did not become ready via ${transport.describe()} (${attempts} connection attempts; last error: ${lastError?.message ?? 'none'})`,
    { cause: lastError },
  )
}
