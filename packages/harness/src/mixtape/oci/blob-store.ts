import { createHash } from 'node:crypto'
import { chmodSync, createReadStream, existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs'
import { open } from 'node:fs/promises'
import { join } from 'node:path'
import { HarnessError } from '../../errors.js'
import { sleep } from '../../host/sleep.js'
import type { Descriptor } from './media-types.js'
import type { BlobResponse } from './registry.js'
import { TransientError, backoffMs, describeNetworkError, isNetworkError, type RetryNotice, type RetryPolicy } from './retry.js'

const WRITE_BATCH = 1024 * 1024

/** The blob's bytes can no longer be trusted after some were handed out: read it again from byte 0. */
export class RereadBlob extends Error {}

export interface BlobReadOptions {
  retry: RetryPolicy
  onRetry?: ((notice: RetryNotice) => void) | undefined
  /** Before the first byte: whether it comes from the store, and how much of a partial download is reused. */
  onStart?: ((info: { stored: boolean; resumeFrom: number }) => void) | undefined
  /** Bytes received from the network. */
  onBytes?: ((bytes: number) => void) | undefined
}

/**
 * Blobs as the registry serves them, named by digest: `blobs/sha256/<hex>` (verified, read-only)
 * and `partial/sha256/<hex>` (a download in progress, resumed with Range). Tags that share a blob
 * download it once; the caller holds the blob's lock (lockPath) while it may download it, so
 * concurrent pulls of one blob download it once and never append to one partial file together.
 */
export class BlobStore {
  constructor(
    readonly root: string,
    private readonly lockDir: string,
  ) {}

  path(digest: string): string {
    return join(this.root, 'blobs', 'sha256', hexOf(digest))
  }

  partialPath(digest: string): string {
    return join(this.root, 'partial', 'sha256', hexOf(digest))
  }

  has(desc: Descriptor): boolean {
    try {
      return statSync(this.path(desc.digest)).size === desc.size
    } catch {
      return false
    }
  }

  /**
   * Every byte of the blob, from 0, in order: from the store, else from the network (a partial
   * download's bytes first, then the rest with Range), hashed as it streams. The blob is in the
   * store, verified, when the iteration ends; a digest mismatch ends it with an error instead.
   * Throws RereadBlob when bytes already handed out turned out wrong (a damaged store entry or
   * partial): the caller starts over, and the next read downloads afresh.
   */
  async *read(desc: Descriptor, fetchFrom: (offset: number) => Promise<BlobResponse>, options: BlobReadOptions): AsyncGenerator<Buffer> {
    if (this.has(desc)) return yield* this.readStored(desc, options)
    yield* this.download(desc, fetchFrom, options)
  }

  /** The lock a process holds while it may download `digest` (see pull.ts; taken for all missing blobs at once). */
  lockPath(digest: string): string {
    return join(this.lockDir, `blob-${hexOf(digest)}.lock`)
  }

  private async *readStored(desc: Descriptor, options: BlobReadOptions): AsyncGenerator<Buffer> {
    options.onStart?.({ stored: true, resumeFrom: 0 })
    const path = this.path(desc.digest)
    const hash = createHash('sha256')
    for await (const chunk of createReadStream(path, { highWaterMark: WRITE_BATCH }) as AsyncIterable<Buffer>) {
      hash.update(chunk)
      yield chunk
    }
    if (`sha256:${hash.digest('hex')}` !== desc.digest) {
      rmSync(path, { force: true })
      throw new RereadBlob(`the stored copy of ${desc.digest} was damaged (removed)`)
    }
  }

  private async *download(desc: Descriptor, fetchFrom: (offset: number) => Promise<BlobResponse>, options: BlobReadOptions): AsyncGenerator<Buffer> {
    const partial = this.partialPath(desc.digest)
    mkdirSync(join(this.root, 'partial', 'sha256'), { recursive: true })
    const file = await open(partial, 'a+')
    let closed = false
    const pending: Buffer[] = []
    let pendingBytes = 0
    // Network chunks are small (16–64 KiB); they are persisted and handed on in batches of 1 MiB,
    // which keeps the per-chunk cost of the pipeline behind (zstd, hashing, writes) low. One write
    // is in flight while the batch goes downstream; the next batch waits for it (appends in order).
    let writing: Promise<unknown> = Promise.resolve()
    const flush = async (): Promise<Buffer | undefined> => {
      await writing
      if (pendingBytes === 0) return undefined
      const data = pending.length === 1 ? pending[0]! : Buffer.concat(pending, pendingBytes)
      pending.length = 0
      pendingBytes = 0
      writing = file.write(data)
      return data
    }
    try {
      let offset = (await file.stat()).size
      if (offset > desc.size) {
        await file.truncate(0)
        offset = 0
      }
      const resumed = offset
      options.onStart?.({ stored: false, resumeFrom: resumed })
      const hash = createHash('sha256')
      if (resumed > 0) {
        for await (const chunk of createReadStream(partial, { start: 0, end: resumed - 1, highWaterMark: WRITE_BATCH }) as AsyncIterable<Buffer>) {
          hash.update(chunk)
          yield chunk
        }
      }
      for (let attempt = 1; offset < desc.size; attempt++) {
        const before = offset
        try {
          const response = await fetchFrom(offset)
          let skip = offset - response.start
          for await (const raw of response.body) {
            let chunk = Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength)
            if (skip > 0) {
              if (chunk.length <= skip) {
                skip -= chunk.length
                continue
              }
              chunk = chunk.subarray(skip)
              skip = 0
            }
            if (offset + chunk.length > desc.size) {
              response.cancel()
              throw new HarnessError('MIXTAPE_INVALID', `the registry served more than the ${desc.size} bytes the manifest declares for blob ${desc.digest}`, {
                fix: 'the registry or a proxy in between serves the wrong content; pull again, and report it if it persists',
              })
            }
            hash.update(chunk)
            offset += chunk.length
            pending.push(chunk)
            pendingBytes += chunk.length
            options.onBytes?.(chunk.length)
            if (pendingBytes >= WRITE_BATCH) yield (await flush())!
          }
          if (offset < desc.size) throw new TransientError(`the stream ended at byte ${offset} of ${desc.size}`)
        } catch (err) {
          if (!isNetworkError(err)) throw err
          const rest = await flush()
          if (rest) yield rest
          if (offset > before) attempt = 1
          const reason = err instanceof TransientError ? err.message : describeNetworkError(err)
          if (attempt >= options.retry.attempts) {
            throw new HarnessError(
              'REGISTRY',
              `downloading blob ${desc.digest} failed after ${attempt} attempt(s) without progress, at byte ${offset} of ${desc.size}: ${reason}`,
              {
                fix: 'check the registry and the network, then pull again: the download resumes from where it stopped',
                cause: err,
              },
            )
          }
          const delayMs = backoffMs(attempt, options.retry, err instanceof TransientError ? err.retryAfter : undefined)
          options.onRetry?.({ what: `blob ${desc.digest.slice(0, 19)}`, attempt, attempts: options.retry.attempts, delayMs, reason })
          await sleep(delayMs)
        }
      }
      const rest = await flush()
      if (rest) yield rest
      await writing
      await file.close()
      closed = true
      const actual = `sha256:${hash.digest('hex')}`
      if (actual !== desc.digest) {
        rmSync(partial, { force: true })
        if (resumed > 0) throw new RereadBlob(`a resumed download of ${desc.digest} did not verify (the partial file was removed)`)
        throw new HarnessError('MIXTAPE_INVALID', `blob ${desc.digest} from the registry hashes to ${actual}: its content is not what the manifest names`, {
          fix: 'the registry serves a corrupt blob (or a proxy alters it); nothing was cached. Report it to the image publisher, or pull another tag',
        })
      }
      const final = this.path(desc.digest)
      mkdirSync(join(this.root, 'blobs', 'sha256'), { recursive: true })
      chmodSync(partial, 0o444)
      renameSync(partial, final)
    } finally {
      if (!closed) {
        await flush().catch(() => undefined)
        await writing.catch(() => undefined)
        await file.close().catch(() => undefined)
      }
    }
  }

  /** Digests of the verified blobs in the store. */
  storedDigests(): string[] {
    const dir = join(this.root, 'blobs', 'sha256')
    // Only names that are digests: anything else is not ours.
    return existsSync(dir)
      ? readdirSync(dir)
          .filter((name) => /^[a-f0-9]{64}$/.test(name))
          .map((hex) => `sha256:${hex}`)
      : []
  }
}

function hexOf(digest: string): string {
  const hex = digest.slice(digest.indexOf(':') + 1)
  if (!/^[a-f0-9]{64}$/.test(hex)) throw new HarnessError('MIXTAPE_INVALID', `${digest} is not a sha256 digest`)
  return hex
}
