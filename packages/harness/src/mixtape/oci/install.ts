import { createHash } from 'node:crypto'
import { createWriteStream } from 'node:fs'
import { join } from 'node:path'
import { Transform } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import * as zlib from 'node:zlib'
import { HarnessError } from '../../errors.js'
import { RereadBlob, type BlobStore } from './blob-store.js'
import { checkDescriptor, isRawDiskMediaType, layerOutput, MEDIA, type Descriptor, type LayerOutput } from './media-types.js'
import type { PullProgress } from './progress.js'
import type { RegistryClient } from './registry.js'
import type { RetryPolicy } from './retry.js'
import type { FileSum } from './verify.js'

export interface PlannedLayer {
  desc: Descriptor
  out: LayerOutput
}

/** The layers of an image manifest and the file each becomes; names must be distinct. */
export function planLayers(manifest: Record<string, unknown>, reserved: ReadonlySet<string>): PlannedLayer[] {
  const layers = Array.isArray(manifest.layers) ? manifest.layers : []
  if (layers.length === 0) {
    throw new HarnessError('MIXTAPE_INVALID', 'the image manifest has no layers', { fix: 'the image is published wrongly: republish it, or pull another tag' })
  }
  const taken = new Set(reserved)
  return layers.map((value, i) => {
    const desc = checkDescriptor(value, `layer ${i} of the image manifest`)
    const out = layerOutput(desc, taken)
    taken.add(out.file)
    return { desc, out }
  })
}

export function diskFormat(plan: PlannedLayer[]): 'raw' | 'qcow2' | 'unknown' {
  if (plan.some((l) => isRawDiskMediaType(l.desc.mediaType))) return 'raw'
  if (plan.some((l) => l.desc.mediaType === MEDIA.diskQcow2Zstd || l.desc.mediaType === MEDIA.diskQcow2)) return 'qcow2'
  return 'unknown'
}

export interface InstallDeps {
  store: BlobStore
  client: RegistryClient
  retry: RetryPolicy
  progress: PullProgress
  /** Lock a blob that was in the store when the pull's locks were taken, before downloading it again. */
  lockBlob: (digest: string) => Promise<() => Promise<void>>
}

export interface Installed {
  /** sha256 and size of each file written (for mixtape.toml). */
  files: Map<string, FileSum>
  /** zstd blobs by their title (`stereos.img.zst`), for mixtape.toml's compressed_* keys. */
  compressed: Map<string, FileSum>
  downloaded: number
}

/**
 * Write every layer into `dir`: each blob streams out of the blob store (which fetches what it
 * lacks and verifies the digest as it streams), zstd layers through Node's decompressor. A layer
 * whose already-consumed bytes turn out wrong is written again once, from a fresh download.
 */
export async function installLayers(plan: PlannedLayer[], dir: string, deps: InstallDeps): Promise<Installed> {
  const installed: Installed = { files: new Map(), compressed: new Map(), downloaded: 0 }
  for (const layer of plan) {
    try {
      await writeLayer(layer, dir, deps, installed)
    } catch (err) {
      if (!(err instanceof RereadBlob)) throw err
      deps.progress({ type: 'warning', message: `${err.message}; downloading it again` })
      const release = await deps.lockBlob(layer.desc.digest)
      try {
        await writeLayer(layer, dir, deps, installed)
      } catch (again) {
        if (!(again instanceof RereadBlob)) throw again
        throw new HarnessError('MIXTAPE_INVALID', `layer ${layer.out.file} (${layer.desc.digest}) failed verification twice: ${again.message}`, { fix: 'pull again; if it persists, the registry serves a corrupt blob' })
      } finally {
        await release()
      }
    }
  }
  return installed
}

async function writeLayer({ desc, out }: PlannedLayer, dir: string, deps: InstallDeps, installed: Installed): Promise<void> {
  const started = performance.now()
  let done = 0
  let downloaded = 0
  const blob = deps.store.read(desc, (offset) => deps.client.blob(desc.digest, offset), {
    retry: deps.retry,
    onRetry: (notice) => deps.progress({ type: 'retry', notice }),
    onStart: ({ stored, resumeFrom }) => deps.progress({ type: 'layer', file: out.blobName, digest: desc.digest, size: desc.size, stored, resumeFrom }),
    onBytes: (bytes) => (downloaded += bytes),
  })
  // Errors of the blob itself (network, digest) are told apart from the decompressor's own.
  let sourceError: unknown
  const source = async function* () {
    try {
      yield* blob
    } catch (err) {
      sourceError = err
      throw err
    }
  }
  const counted = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      done += chunk.length
      deps.progress({ type: 'bytes', file: out.blobName, done, size: desc.size })
      callback(null, chunk)
    },
  })
  const target = createWriteStream(join(dir, out.file), { highWaterMark: 4 * 1024 * 1024 })
  const blobHex = desc.digest.slice('sha256:'.length)
  try {
    if (out.zstd) {
      const decompress = zstdDecompressor()
      const sum = hashing()
      await pipeline(source(), counted, decompress, sum.stream, target).catch((err: unknown) => {
        if (err !== sourceError && /^(ZSTD_|Z_)/.test(String((err as NodeJS.ErrnoException).code ?? ''))) {
          throw new HarnessError('MIXTAPE_INVALID', `layer ${out.blobName} (${desc.digest}) is not a valid zstd stream: ${(err as Error).message}`, {
            fix: 'the image is published with a corrupt disk layer; nothing was cached. Pull another tag, or the other disk format',
            cause: err,
          })
        }
        throw err
      })
      installed.files.set(out.file, sum.result())
      installed.compressed.set(out.blobName, { sha256: blobHex, size: desc.size })
    } else {
      await pipeline(source(), counted, target)
      installed.files.set(out.file, { sha256: blobHex, size: desc.size })
    }
  } finally {
    installed.downloaded += downloaded
  }
  deps.progress({ type: 'layer-done', file: out.blobName, size: desc.size, downloaded, ms: performance.now() - started })
}

function zstdDecompressor(): Transform {
  if (typeof zlib.createZstdDecompress !== 'function') {
    throw new HarnessError('HOST', `Node ${process.version} has no zstd in node:zlib (needed to unpack mixtape disks)`, { fix: 'use Node 22.15 or later (Node 24 recommended)' })
  }
  return zlib.createZstdDecompress({ chunkSize: 1024 * 1024 })
}

/** A pass-through that hashes what flows through it. */
function hashing(): { stream: Transform; result: () => FileSum } {
  const hash = createHash('sha256')
  let size = 0
  const stream = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      hash.update(chunk)
      size += chunk.length
      callback(null, chunk)
    },
  })
  return { stream, result: () => ({ sha256: hash.digest('hex'), size }) }
}
