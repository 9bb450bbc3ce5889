import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import type { Arch } from '../config/options.js'
import { HarnessError } from '../errors.js'
import { hostArch } from '../host/arch.js'
import { cacheLayout, cacheLockRequest, readRecord, RECORD_FILE, recordIntact, tagDir, type CacheLayout, type PullRecord } from './cache.js'
import type { BodyLimits } from './oci/body.js'
import { findCredentials } from './oci/credentials.js'
import { checkDiskLayers, diskFormat, installLayers, planLayers, type Installed, type PlannedLayer } from './oci/install.js'
import { acquireLocks, withLocks } from '../host/lock.js'
import { checkDescriptor, isIndexMediaType, isRawDiskMediaType, MEDIA, type Descriptor } from './oci/media-types.js'
import { OCI_ARCH, selectIndexManifest, type PlatformPick } from './oci/platform.js'
import type { PullProgress } from './oci/progress.js'
import { parseReference, type MixtapeReference } from './oci/reference.js'
import { RegistryClient, type FetchedManifest } from './oci/registry.js'
import { DEFAULT_RETRY, type RetryPolicy } from './oci/retry.js'
import { verifyMixtapeToml, type FileSum } from './oci/verify.js'

export interface PullOptions {
  /** Guest architecture to pick from a multi-arch index; default the host's. */
  arch?: Arch | undefined
  /** mb base dir; default $MB_CONFIG_DIR, $XDG_CONFIG_HOME/mb, ~/.config/mb (mb's own, so images are shared). */
  base?: string | undefined
  /** Return a cached copy without asking the registry (what booting does). Default: ask, and pull when the tag moved. */
  preferCache?: boolean | undefined
  /** Install again even when the cached copy is the registry's current one. */
  force?: boolean | undefined
  progress?: PullProgress | undefined
  retry?: RetryPolicy | undefined
  env?: NodeJS.ProcessEnv | undefined
  fetch?: typeof fetch | undefined
  /** Time bound for registry bodies held in memory (default 30 s). */
  bodyLimits?: BodyLimits | undefined
}

export interface PullResult {
  reference: string
  name: string
  tag: string
  dir: string
  digest: string
  manifest: string
  platform: string | undefined
  format: PullRecord['format']
  /** mb's platform tier (1–4; 0 for a single manifest without an index). */
  tier: number
  /** Nothing was installed: the cache already held this digest. */
  upToDate: boolean
  /** Bytes fetched from the registry (blobs). */
  downloaded: number
  files: Record<string, FileSum>
  /** Files checked against mixtape.toml's sha256 and size. */
  verified: string[]
}

/**
 * Pull a mixtape into mb's cache: resolve the reference, pick the platform (mb's 4 tiers, raw
 * preferred), fetch the layers through the blob store (digests verified while streaming), unpack
 * zstd, check mixtape.toml's checksums, and rename the finished dir into place. Any failure leaves
 * no cache entry. One process per tag at a time (flock); the others wait, then find it cached.
 */
export async function pullMixtape(ref: string, options: PullOptions = {}): Promise<PullResult> {
  const parsed = parseReference(ref)
  const arch = options.arch ?? hostArch()
  if (!arch)
    throw new HarnessError('HOST', `This host's architecture (${process.arch}) has no matching guest architecture`, { fix: 'pass an arch (x86_64 or aarch64)' })
  const layout = cacheLayout(options.base)
  const progress = options.progress ?? (() => undefined)
  const platform = `linux/${OCI_ARCH[arch]}`
  // The cache shared (rm and prune take it exclusive), then the tag: one process per tag at a time.
  const locks = [cacheLockRequest(layout, 'shared'), { path: join(layout.locks, `tag-${parsed.name}@${parsed.localTag}.lock`) }]
  return withLocks(
    locks,
    { onWait: () => progress({ type: 'waiting', what: `another process is pulling ${parsed.name}:${parsed.localTag} (or pruning the cache)` }) },
    async () => {
      if (options.preferCache) {
        const dir = findCachedMixtape(ref, { base: layout.base, arch })
        if (dir) return resultFromCache(parsed, dir, readRecord(dir))
      }
      return pullLocked(parsed, platform, layout, { ...options, progress })
    },
  )
}

/**
 * The cached dir for `ref`, without any network request, or undefined. A digest reference needs our
 * record to show that digest; a record from another repository, or for another platform, or
 * whose files are gone or truncated, is a miss (mb's layout keeps one image per name and tag).
 * Dirs that mb pulled (no record) are hits.
 */
export function findCachedMixtape(ref: string, options: { base?: string | undefined; arch?: Arch | undefined } = {}): string | undefined {
  const parsed = parseReference(ref)
  const dir = tagDir(cacheLayout(options.base), parsed.name, parsed.localTag)
  if (!existsSync(dir)) return undefined
  const record = readRecord(dir)
  if (!record) return parsed.digest ? undefined : dir
  if (record.registry !== parsed.registry || record.repository !== parsed.repository) return undefined
  if (options.arch && record.for !== `linux/${OCI_ARCH[options.arch]}`) return undefined
  if (parsed.digest && record.digest !== parsed.digest && record.manifest !== parsed.digest) return undefined
  return recordIntact(dir, record) ? dir : undefined
}

async function pullLocked(
  parsed: MixtapeReference,
  platform: string,
  layout: CacheLayout,
  options: PullOptions & { progress: PullProgress },
): Promise<PullResult> {
  const { progress } = options
  const started = performance.now()
  const retry = options.retry ?? DEFAULT_RETRY
  const env = options.env ?? process.env
  const client = new RegistryClient(parsed, {
    credentials: findCredentials(parsed.registry, env),
    retry,
    onRetry: (notice) => progress({ type: 'retry', notice }),
    fetch: options.fetch,
    env,
    bodyLimits: options.bodyLimits,
  })
  const top = await client.manifest(parsed.digest ?? parsed.tag!)
  const dir = tagDir(layout, parsed.name, parsed.localTag)
  const existing = readRecord(dir)
  const current =
    existing &&
    existing.digest === top.digest &&
    existing.for === platform &&
    existing.repository === parsed.repository &&
    existing.registry === parsed.registry
  if (!options.force && current && recordIntact(dir, existing)) {
    progress({ type: 'up-to-date', ref: parsed.canonical, dir })
    return resultFromCache(parsed, dir, existing)
  }

  const { manifest, pick } = await pickManifest(client, top, platform)
  const plan = planLayers(manifest.json, new Set([RECORD_FILE]))
  const format = diskFormat(plan)
  progress({
    type: 'resolved',
    ref: parsed.canonical,
    digest: top.digest,
    manifest: manifest.digest,
    platform: pick?.descriptor.platform ? `${pick.descriptor.platform.os}/${pick.descriptor.platform.architecture}` : 'no platform',
    format,
    tier: pick?.tier ?? 0,
    warning: pick?.warning,
  })

  mkdirSync(layout.tmp, { recursive: true })
  const staging = mkdtempSync(join(layout.tmp, `${parsed.name}-${parsed.localTag}-${process.pid}-`))
  try {
    const { installed, verified } = await installVerified(plan, staging, layout, client, retry, progress)
    await checkDiskLayers(plan, staging)
    const record: PullRecord = {
      schema: 1,
      reference: parsed.canonical,
      registry: parsed.registry,
      repository: parsed.repository,
      digest: top.digest,
      manifest: manifest.digest,
      for: platform,
      platform: pick?.descriptor.platform ? `${pick.descriptor.platform.os}/${pick.descriptor.platform.architecture}` : undefined,
      format,
      tier: pick?.tier ?? 0,
      blobs: plan.map((l) => l.desc.digest),
      files: Object.fromEntries(installed.files),
      pulledAt: new Date().toISOString(),
    }
    writeFileSync(join(staging, RECORD_FILE), `${JSON.stringify(record, null, 2)}\n`)
    chmodSync(staging, 0o755)
    commit(staging, dir, layout)
    progress({ type: 'installed', ref: parsed.canonical, dir, downloaded: installed.downloaded, ms: performance.now() - started })
    return { ...resultFromCache(parsed, dir, record), upToDate: false, downloaded: installed.downloaded, verified }
  } catch (err) {
    throw hostIoError(err, layout)
  } finally {
    rmSync(staging, { recursive: true, force: true })
  }
}

/**
 * Install the layers into `staging` holding the locks of the blobs the store lacks (together, in
 * digest order: another tag's pull may share them), then check the files against mixtape.toml.
 */
async function installVerified(
  plan: PlannedLayer[],
  staging: string,
  layout: CacheLayout,
  client: RegistryClient,
  retry: RetryPolicy,
  progress: PullProgress,
): Promise<{ installed: Installed; verified: string[] }> {
  const missing = [...new Set(plan.filter((l) => !layout.store.has(l.desc)).map((l) => l.desc.digest))].sort()
  const release = await acquireLocks(
    missing.map((digest) => ({ path: layout.store.lockPath(digest) })),
    { onWait: () => progress({ type: 'waiting', what: 'another process is downloading blobs this image shares' }) },
  )
  let installed: Installed
  try {
    // (A blob that was in the store but turned out damaged is locked before it is downloaded again.)
    const lockBlob = async (digest: string) => (missing.includes(digest) ? async () => undefined : acquireLocks([{ path: layout.store.lockPath(digest) }]))
    installed = await installLayers(plan, staging, { store: layout.store, client, retry, progress, lockBlob })
  } finally {
    await release()
  }
  const toml = plan.find((l) => l.desc.mediaType === MEDIA.mixtapeToml)?.out.file ?? (installed.files.has('mixtape.toml') ? 'mixtape.toml' : undefined)
  if (!toml) {
    progress({ type: 'warning', message: 'the image has no mixtape.toml: only blob digests were verified' })
    return { installed, verified: [] }
  }
  const result = verifyMixtapeToml(readFileSync(join(staging, toml), 'utf8'), installed.files, installed.compressed)
  if (result.unlisted.length)
    progress({ type: 'warning', message: `mixtape.toml lists no checksum for ${result.unlisted.join(', ')} (their blob digests were verified)` })
  return { installed, verified: result.verified }
}

/** A full disk or a read-only cache is the host's problem: say where, not just the errno. */
function hostIoError(err: unknown, layout: CacheLayout): unknown {
  const code = (err as NodeJS.ErrnoException).code
  if (!code || !['ENOSPC', 'EDQUOT', 'EACCES', 'EPERM', 'EROFS'].includes(code)) return err
  return new HarnessError('HOST', `writing the mixtape cache under ${layout.base} failed: ${(err as Error).message}`, {
    fix:
      code === 'ENOSPC' || code === 'EDQUOT'
        ? 'free disk space (`stereos-harness prune` removes unused blobs), or point MB_CONFIG_DIR at a larger disk'
        : `make ${layout.base} writable, or point MB_CONFIG_DIR elsewhere`,
    cause: err,
  })
}

/** The index's pick (mb's tiers, probing children for a raw disk layer), or the manifest itself. */
async function pickManifest(
  client: RegistryClient,
  top: FetchedManifest,
  platform: string,
): Promise<{ manifest: FetchedManifest; pick: PlatformPick | undefined }> {
  const isIndex = isIndexMediaType(top.mediaType) || (Array.isArray(top.json.manifests) && !Array.isArray(top.json.layers))
  if (!isIndex) return { manifest: top, pick: undefined }
  const entries = Array.isArray(top.json.manifests) ? top.json.manifests : []
  const descriptors = entries.map((value, i) => checkDescriptor(value, `entry ${i} of the image index`))
  const children = new Map<string, Promise<FetchedManifest>>()
  const child = (d: Descriptor) => {
    let fetched = children.get(d.digest)
    if (!fetched) children.set(d.digest, (fetched = client.manifest(d.digest)))
    return fetched
  }
  const [os, architecture] = platform.split('/') as [string, string]
  const pick = await selectIndexManifest(descriptors, os, architecture, async (d) => {
    const layers = (await child(d)).json.layers
    return Array.isArray(layers) && layers.some((l) => isRawDiskMediaType((l as { mediaType?: string }).mediaType))
  })
  const manifest = await child(pick.descriptor)
  if (isIndexMediaType(manifest.mediaType)) {
    throw new HarnessError('MIXTAPE_INVALID', `the index entry ${pick.descriptor.digest} is itself an index`, {
      fix: 'the image is published wrongly: republish it with image manifests in the index',
    })
  }
  return { manifest, pick }
}

/** Move the finished staging dir into place; an older copy of the tag is swapped out, then removed. */
function commit(staging: string, dir: string, layout: CacheLayout): void {
  mkdirSync(dirname(dir), { recursive: true })
  try {
    if (existsSync(dir)) {
      const old = mkdtempSync(join(layout.tmp, `old-${process.pid}-`))
      renameSync(dir, join(old, 'tag'))
      renameSync(staging, dir)
      rmSync(old, { recursive: true, force: true })
    } else {
      renameSync(staging, dir)
    }
  } catch (cause) {
    throw new HarnessError('HOST', `could not move the pulled mixtape into ${dir}: ${(cause as Error).message}`, {
      fix: `${layout.tmp} and ${layout.mixtapes} must be writable and on one filesystem`,
      cause,
    })
  }
}

function resultFromCache(parsed: MixtapeReference, dir: string, record: PullRecord | undefined): PullResult {
  return {
    reference: parsed.canonical,
    name: parsed.name,
    tag: parsed.localTag,
    dir,
    digest: record?.digest ?? '',
    manifest: record?.manifest ?? '',
    platform: record?.platform,
    format: record?.format ?? 'unknown',
    tier: record?.tier ?? 0,
    upToDate: true,
    downloaded: 0,
    files: record?.files ?? {},
    verified: [],
  }
}
