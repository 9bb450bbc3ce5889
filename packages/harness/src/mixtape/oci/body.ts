import { HarnessError } from '../../errors.js'
import { TransientError } from './retry.js'

/**
 * Bounds for the registry bodies the harness holds in memory (manifests, token JSON, error text).
 * A hostile or broken registry can send an endless or endlessly slow body; without a bound the
 * read grows memory until the process dies, or never ends. Blobs are not read here: they stream
 * to disk, bounded by their descriptor's size (BlobStore).
 */
export interface BodyLimits {
  /** Give up on an answer whose headers, or whose body after them, take longer than this (ms). */
  timeoutMs: number
}

export const DEFAULT_BODY_LIMITS: BodyLimits = { timeoutMs: 30_000 }

/** Manifests and indexes are small JSON documents; a larger answer is not one. */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024
/** A token answer is a JSON object with a token of a few KiB. */
export const MAX_TOKEN_BYTES = 256 * 1024
/** Error bodies only feed a message: the first bytes are enough. */
const MAX_ERROR_TEXT_BYTES = 8 * 1024

/**
 * fetch with a bound on the wait for the response headers (a registry that accepts and never
 * answers would otherwise hold a pull for minutes per attempt). Once the headers are in, the
 * body is the reader's to bound. A timeout is transient: the caller's retries apply.
 */
export async function fetchAnswer(fetchImpl: typeof fetch, url: string | URL, init: RequestInit, limits: BodyLimits): Promise<Response> {
  const controller = new AbortController()
  const timer = setTimeout(() => controller.abort(), limits.timeoutMs)
  try {
    return await fetchImpl(url, { ...init, signal: controller.signal })
  } catch (err) {
    if (controller.signal.aborted) throw new TransientError(`${new URL(url).origin} sent no answer within ${limits.timeoutMs} ms`)
    throw err
  } finally {
    clearTimeout(timer)
  }
}

type Outcome = 'ended' | 'too-large' | 'timed-out'

/** Read at most `maxBytes` of the body within `timeoutMs`; the connection is dropped at either bound. */
async function readBounded(response: Response, maxBytes: number, timeoutMs: number): Promise<{ bytes: Buffer; outcome: Outcome }> {
  const reader = response.body?.getReader()
  if (!reader) return { bytes: Buffer.alloc(0), outcome: 'ended' }
  const chunks: Buffer[] = []
  let total = 0
  let timer: NodeJS.Timeout | undefined
  const expired = new Promise<'timed-out'>((resolve) => {
    timer = setTimeout(() => resolve('timed-out'), timeoutMs)
  })
  let outcome: Outcome = 'ended'
  try {
    for (;;) {
      const next = await Promise.race([reader.read(), expired])
      if (next === 'timed-out') {
        outcome = next
        break
      }
      if (next.done) break
      const room = maxBytes - total
      const chunk = Buffer.from(next.value.buffer, next.value.byteOffset, next.value.byteLength)
      chunks.push(chunk.length > room ? chunk.subarray(0, Math.max(room, 0)) : chunk)
      total += Math.min(chunk.length, Math.max(room, 0))
      if (chunk.length > room) {
        outcome = 'too-large'
        break
      }
    }
  } finally {
    clearTimeout(timer)
    if (outcome !== 'ended') await reader.cancel().catch(() => undefined)
    reader.releaseLock()
  }
  return { bytes: Buffer.concat(chunks, total), outcome }
}

/**
 * A body that must be read whole (manifest, token JSON): larger than `maxBytes`, or not ended
 * within the time limit, is an error naming `what`, the bound and the URL.
 */
export async function readWholeBody(
  response: Response,
  what: string,
  url: string,
  maxBytes: number,
  limits: BodyLimits,
  tooLarge: (message: string) => HarnessError,
): Promise<Buffer> {
  const { bytes, outcome } = await readBounded(response, maxBytes, limits.timeoutMs)
  if (outcome === 'too-large') throw tooLarge(`${what} at ${url} is larger than ${maxBytes} bytes`)
  if (outcome === 'timed-out') {
    throw new HarnessError(
      'REGISTRY',
      `${what} at ${url} did not arrive within ${limits.timeoutMs} ms (${bytes.length} bytes came; the registry sends it too slowly or without end)`,
      {
        fix: 'check the registry (or a proxy in between) and pull again; a registry that streams a body without end is broken or hostile',
      },
    )
  }
  return bytes
}

/** The start of an error body, for a message: never more than MAX_ERROR_TEXT_BYTES, never waits past the limit. */
export async function readErrorText(response: Response, limits: BodyLimits): Promise<string> {
  const { bytes } = await readBounded(response, MAX_ERROR_TEXT_BYTES, Math.min(limits.timeoutMs, 5_000)).catch(() => ({ bytes: Buffer.alloc(0) }))
  return bytes.toString('utf8')
}
