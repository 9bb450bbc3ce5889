import { createHash } from 'node:crypto'
import { createWriteStream, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { Transform } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import * as zlib from 'node:zlib'
import { HarnessError } from '../../errors.js'
import { checkDiskImage } from '../../vmm/disk.js'
import { RereadBlob, type BlobStore } from './blob-store.js'
import { checkDescriptor, isRawDiskMediaType, layerOutput, MEDIA, type Descriptor, type LayerOutput } from './media-types.js'
import type { PullProgress } from './progress.js'
import type { RegistryClient } from './registry.js'
import type { RetryPolicy } from './retry.js'
import { declaredSizes, type FileSum } from './verify.js'

/** mixtape.toml is a few hundred bytes; a larger one is not read (it is parsed in memory). */
const MAX_TOML_BYTES = 1024 * 1024
/**
 * The unpacking bound for a zstd layer whose size mixtape.toml does not declare (an image
 * without one, as mb accepts): larger than any mixtape disk, small enough not to fill a disk.
 */
const UNDECLARED_ZSTD_LIMIT = 16 * 1024 * 1024 * 1024
/**
 * The host's own bound on any one file of an image: a layer's declared (compressed) size and
 * the unpacked size mixtape.toml declares both come from the image, which may be hostile (it
 * could declare 2^53 bytes and unpack until the disk is full). Mixtape disks are a few GiB.
 */
export const MAX_IMAGE_FILE_BYTES = 64 * 1024 * 1024 * 1024

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
    if (desc.size > MAX_IMAGE_FILE_BYTES) throw tooLarge(`its manifest declares layer ${out.blobName} (${desc.digest}) as ${desc.size} bytes`)
    taken.add(out.file)
    return { desc, out }
  })
}

export function diskFormat(plan: PlannedLayer[]): 'raw' | 'qcow2' | 'unknown' {
  if (plan.some((l) => isRawDiskMediaType(l.desc.mediaType))) return 'raw'
  if (plan.some((l) => l.desc.mediaType === MEDIA.diskQcow2Zstd || l.desc.mediaType === MEDIA.diskQcow2)) return 'qcow2'
  return 'unknown'
}

/**
 * Refuse a qcow2 disk layer that names a backing file or external data file (checkDiskImage), so
 * no such image reaches the cache; boot checks again for dirs it did not pull.
 */
export async function checkDiskLayers(plan: PlannedLayer[], dir: string): Promise<void> {
  for (const { desc, out } of plan) {
    if (desc.mediaType === MEDIA.diskQcow2Zstd || desc.mediaType === MEDIA.diskQcow2) await checkDiskImage({ path: join(dir, out.file), format: 'qcow2' })
  }
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

function isToml({ desc, out }: PlannedLayer): boolean {
  return desc.mediaType === MEDIA.mixtapeToml || out.file === 'mixtape.toml'
}

/**
 * Write every layer into `dir`: each blob streams out of the blob store (which fetches what it
 * lacks and verifies the digest as it streams), zstd layers through Node's decompressor. A layer
 * whose already-consumed bytes turn out wrong is written again once, from a fresh download.
 * mixtape.toml comes first: a zstd layer stops unpacking at the size it declares for its file
 * (a decompression bomb fails there instead of filling the disk).
 */
export async function installLayers(plan: PlannedLayer[], dir: string, deps: InstallDeps): Promise<Installed> {
  const installed: Installed = { files: new Map(), compressed: new Map(), downloaded: 0 }
  let declared = new Map<string, number>()
  for (const layer of [...plan.filter(isToml), ...plan.filter((l) => !isToml(l))]) {
    if (isToml(layer) && layer.desc.size > MAX_TOML_BYTES) {
      throw new HarnessError(
        'MIXTAPE_INVALID',
        `the image's ${layer.out.file} layer is ${layer.desc.size} bytes; a mixtape.toml is at most ${MAX_TOML_BYTES}`,
        {
          fix: 'the image is published wrongly: republish it, or pull another tag',
        },
      )
    }
    const declaredSize = declared.get(layer.out.file)
    if (layer.out.zstd && declaredSize !== undefined && declaredSize > MAX_IMAGE_FILE_BYTES)
      throw tooLarge(`its mixtape.toml declares ${layer.out.file} (unpacked from ${layer.out.blobName}) as ${declaredSize} bytes`)
    const limit = layer.out.zstd ? { bytes: declaredSize ?? UNDECLARED_ZSTD_LIMIT, declared: declaredSize !== undefined } : undefined
    const write = () => writeLayer(layer, dir, deps, installed, limit)
    try {
      await write()
    } catch (err) {
      if (!(err instanceof RereadBlob)) throw err
      deps.progress({ type: 'warning', message: `${err.message}; downloading it again` })
      const release = await deps.lockBlob(layer.desc.digest)
      try {
        await write()
      } catch (again) {
        if (!(again instanceof RereadBlob)) throw again
        throw new HarnessError('MIXTAPE_INVALID', `layer ${layer.out.file} (${layer.desc.digest}) failed verification twice: ${again.message}`, {
          fix: 'pull again; if it persists, the registry serves a corrupt blob',
        })
      } finally {
        await release()
      }
    }
    if (isToml(layer)) declared = declaredSizes(readFileSync(join(dir, layer.out.file), 'utf8'))
  }
  return installed
}

function tooLarge(what: string): HarnessError {
  return new HarnessError(
    'MIXTAPE_INVALID',
    `the image is refused: ${what}, more than the ${MAX_IMAGE_FILE_BYTES / 1024 ** 3} GiB the harness accepts for one file of an image`,
    {
      fix: 'the image is published wrongly or is hostile; nothing was cached. Pull another tag, or report it to the publisher',
    },
  )
}

interface UnpackLimit {
  bytes: number
  /** mixtape.toml declared it (else UNDECLARED_ZSTD_LIMIT). */
  declared: boolean
}

async function writeLayer({ desc, out }: PlannedLayer, dir: string, deps: InstallDeps, installed: Installed, limit?: UnpackLimit): Promise<void> {
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
      const bounded = boundedTo(limit ?? { bytes: UNDECLARED_ZSTD_LIMIT, declared: false }, out, desc)
      await pipeline(source(), counted, decompress, bounded, sum.stream, target).catch((err: unknown) => {
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

/** Passes at most `limit.bytes` through; one byte more fails the layer (nothing beyond is written). */
function boundedTo(limit: UnpackLimit, out: LayerOutput, desc: Descriptor): Transform {
  let total = 0
  return new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      total += chunk.length
      if (total <= limit.bytes) return callback(null, chunk)
      const what = limit.declared
        ? `the ${limit.bytes} bytes its mixtape.toml declares for ${out.file}`
        : `${limit.bytes} bytes (mixtape.toml declares no size for ${out.file})`
      callback(
        new HarnessError(
          'MIXTAPE_INVALID',
          `layer ${out.blobName} (${desc.digest}, ${desc.size} bytes) unpacks to more than ${what}: unpacking stopped there`,
          {
            fix: 'the image is published wrongly or is a decompression bomb; nothing was cached. Pull another tag, or report it to the publisher',
          },
        ),
      )
    },
  })
}

function zstdDecompressor(): Transform {
  if (typeof zlib.createZstdDecompress !== 'function') {
    throw new HarnessError('HOST', `Node ${process.version} has no zstd in node:zlib (needed to unpack mixtape disks)`, {
      fix: 'use Node 22.15 or later (Node 24 recommended)',
    })
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
