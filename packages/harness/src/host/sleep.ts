import { setTimeout as delay } from 'node:timers/promises'

/** A sleep that, when aborted, rejects with the signal's reason (not a generic AbortError). */
export async function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  try {
    await delay(ms, undefined, signal ? { signal } : undefined)
  } catch (err) {
    if (signal?.aborted) throw signal.reason
    throw err
  }
}
