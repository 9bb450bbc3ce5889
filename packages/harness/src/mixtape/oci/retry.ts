import { HarnessError } from '../../errors.js'
import { sleep } from '../../host/sleep.js'

/** Attempts in all (not retries), and the backoff: base doubling per attempt, capped, ±20% jitter. */
export interface RetryPolicy {
  attempts: number
  baseMs: number
  maxMs: number
}

export const DEFAULT_RETRY: RetryPolicy = { attempts: 4, baseMs: 500, maxMs: 8_000 }

export interface RetryNotice {
  what: string
  attempt: number
  attempts: number
  delayMs: number
  reason: string
}

/** 5xx, 429 and 408 are worth another try; everything else below 500 is an answer. */
export function isRetryableStatus(status: number): boolean {
  return status >= 500 || status === 429 || status === 408
}

export function backoffMs(attempt: number, policy: RetryPolicy, retryAfter?: string | null): number {
  const seconds = retryAfter ? Number(retryAfter) : NaN
  if (Number.isFinite(seconds) && seconds >= 0) return Math.min(seconds * 1000, policy.maxMs)
  const base = Math.min(policy.baseMs * 2 ** (attempt - 1), policy.maxMs)
  return Math.round(base * (0.8 + Math.random() * 0.4))
}

/** A failure that another attempt may fix: a dropped connection, a 5xx, a truncated body. */
export class TransientError extends Error {
  constructor(
    message: string,
    readonly retryAfter?: string | null,
  ) {
    super(message)
  }
}

/** fetch rejects with a TypeError for network failures; keep its cause's code in the message. */
export function describeNetworkError(err: unknown): string {
  const cause = (err as { cause?: { code?: string; message?: string } }).cause
  const base = err instanceof Error ? err.message : String(err)
  return cause?.code
    ? `${base} (${cause.code}${cause.message && !cause.message.includes(cause.code) ? `: ${cause.message}` : ''})`
    : cause?.message
      ? `${base} (${cause.message})`
      : base
}

export function isNetworkError(err: unknown): boolean {
  return (
    err instanceof TypeError ||
    (err as { name?: string }).name === 'AbortError' ||
    (err as { code?: string }).code === 'ECONNRESET' ||
    err instanceof TransientError
  )
}

/**
 * Run `fn` until it succeeds, retrying TransientErrors and network errors with backoff; anything
 * else (a HarnessError, a 4xx answer) ends at once. After the last attempt the cause is named.
 */
export async function withRetries<T>(
  what: string,
  policy: RetryPolicy,
  onRetry: ((notice: RetryNotice) => void) | undefined,
  fn: (attempt: number) => Promise<T>,
): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn(attempt)
    } catch (err) {
      if (!isNetworkError(err)) throw err
      const reason = err instanceof TransientError ? err.message : describeNetworkError(err)
      if (attempt >= policy.attempts) {
        throw new HarnessError('REGISTRY', `${what} failed after ${attempt} attempt(s): ${reason}`, {
          fix: 'check that the registry is up and reachable from this host (proxy, DNS, firewall), then pull again; a partial download resumes where it stopped',
          cause: err,
        })
      }
      const delayMs = backoffMs(attempt, policy, err instanceof TransientError ? err.retryAfter : undefined)
      onRetry?.({ what, attempt, attempts: policy.attempts, delayMs, reason })
      await sleep(delayMs)
    }
  }
}
