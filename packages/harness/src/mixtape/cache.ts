import { existsSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs'
import { homedir } from 'node:os'
import { join } from 'node:path'
import { HarnessError } from '../errors.js'
import { isAlive } from '../host/process.js'
import { BlobStore } from './oci/blob-store.js'
import { withLocks } from '../host/lock.js'
import { parseReference } from './oci/reference.js'
import type { FileSum } from './oci/verify.js'

/**
 * The mixtape cache is mb's (`<base>/mixtapes/<name>/<tag>/`), so `mb pull` and our pull share
 * images. What mb does not have lives beside it in `<base>/stereos-harness/`: the blob store
 * (`blobs/`, `partial/`), staging dirs (`tmp/`, same filesystem, for the atomic rename) and lock
 * files (`locks/`). Each tag dir we install carries `.stereos-harness.json` (PullRecord); mb
 * ignores it, and dirs without it were pulled by mb.
 */
export interface CacheLayout {
  base: string
  mixtapes: string
  own: string
  tmp: string
  locks: string
  store: BlobStore
}

export const RECORD_FILE = '.stereos-harness.json'

/** mb's base dir rule (STEREOS-FACTS §4.4), without its config.toml indirection. */
export function mbBaseDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.MB_CONFIG_DIR) return env.MB_CONFIG_DIR
  if (env.XDG_CONFIG_HOME) return join(env.XDG_CONFIG_HOME, 'mb')
  return join(homedir(), '.config', 'mb')
}

export function cacheLayout(base: string = mbBaseDir()): CacheLayout {
  const own = join(base, 'stereos-harness')
  const locks = join(own, 'locks')
  return { base, mixtapes: join(base, 'mixtapes'), own, tmp: join(own, 'tmp'), locks, store: new BlobStore(own, locks) }
}

export function tagDir(layout: CacheLayout, name: string, tag: string): string {
  return join(layout.mixtapes, name, tag)
}

/** What our pull installed into a tag dir. */
export interface PullRecord {
  schema: 1
  reference: string
  registry: string
  repository: string
  /** Digest the reference resolved to (the index, or the manifest when there is no index). */
  digest: string
  /** The image manifest that was installed. */
  manifest: string
  /** The platform asked for (`linux/amd64`), and what the index entry declared. */
  for: string
  platform: string | undefined
  format: 'raw' | 'qcow2' | 'unknown'
  /** mb's platform tier of the pick (0: no index). */
  tier: number
  blobs: string[]
  files: Record<string, FileSum>
  pulledAt: string
}

export function readRecord(dir: string): PullRecord | undefined {
  try {
    const record = JSON.parse(readFileSync(join(dir, RECORD_FILE), 'utf8')) as PullRecord
    return record.schema === 1 ? record : undefined
  } catch {
    return undefined
  }
}

/** Every file the record lists is there with its size (a cheap check: stat, no hashing). */
export function recordIntact(dir: string, record: PullRecord): boolean {
  return Object.entries(record.files).every(([file, sum]) => {
    try {
      return statSync(join(dir, file)).size === sum.size
    } catch {
      return false
    }
  })
}

export interface CachedMixtape {
  name: string
  tag: string
  dir: string
  /** Bytes of all files (as mb's `mixtapes list` counts them). */
  size: number
  /** Undefined for tag dirs that mb pulled. */
  record: PullRecord | undefined
}

export function listCached(layout: CacheLayout): CachedMixtape[] {
  const out: CachedMixtape[] = []
  for (const name of subdirs(layout.mixtapes)) {
    for (const tag of subdirs(join(layout.mixtapes, name))) {
      const dir = join(layout.mixtapes, name, tag)
      out.push({ name, tag, dir, size: dirSize(dir), record: readRecord(dir) })
    }
  }
  return out.sort((a, b) => a.name.localeCompare(b.name) || a.tag.localeCompare(b.tag))
}

/** Blobs of the store that some tag dir's record still lists. */
export function referencedBlobs(layout: CacheLayout): Set<string> {
  return new Set(listCached(layout).flatMap((entry) => entry.record?.blobs ?? []))
}

export interface GcReport {
  blobs: string[]
  partials: string[]
  tmp: string[]
  freedBytes: number
}

/**
 * Remove store blobs no tag dir references (only `candidates` when given), and with `all`, also
 * partial downloads and staging dirs whose pulling process is gone. Call with the cache's
 * exclusive lock held.
 */
export function collectGarbage(layout: CacheLayout, options: { candidates?: string[]; all?: boolean } = {}): GcReport {
  const report: GcReport = { blobs: [], partials: [], tmp: [], freedBytes: 0 }
  const keep = referencedBlobs(layout)
  const stored = new Set(layout.store.storedDigests())
  for (const digest of options.candidates ?? stored) {
    if (keep.has(digest) || !stored.has(digest)) continue
    report.freedBytes += remove(layout.store.path(digest))
    report.blobs.push(digest)
  }
  if (!options.all) return report
  const partialDir = join(layout.own, 'partial', 'sha256')
  for (const hex of existsSync(partialDir) ? readdirSync(partialDir) : []) {
    report.freedBytes += remove(join(partialDir, hex))
    report.partials.push(`sha256:${hex}`)
  }
  for (const name of subdirs(layout.tmp)) {
    const pid = Number(/-(\d+)-[^-]+$/.exec(name)?.[1])
    if (pid && pid !== process.pid && isAlive(pid)) continue
    report.freedBytes += remove(join(layout.tmp, name))
    report.tmp.push(name)
  }
  return report
}

/** The cache-wide lock: pulls hold it shared, rm and prune exclusive (they delete blobs). */
export function withCacheLock<T>(layout: CacheLayout, mode: 'shared' | 'exclusive', onWait: (() => void) | undefined, fn: () => Promise<T>): Promise<T> {
  return withLocks([cacheLockRequest(layout, mode)], { onWait }, fn)
}

export function cacheLockRequest(layout: CacheLayout, mode: 'shared' | 'exclusive'): { path: string; mode: 'shared' | 'exclusive' } {
  return { path: join(layout.locks, 'cache.lock'), mode }
}

export interface RemoveReport {
  removed: { name: string; tag: string; dir: string }[]
  gc: GcReport
}

/**
 * `rm REF` as mb does it: `name` removes every tag of the name, `name:tag` one tag (full references
 * map to their local name and tag). Blobs only the removed tags used leave the store too.
 */
export async function removeMixtape(ref: string, layout: CacheLayout, onWait?: () => void): Promise<RemoveReport> {
  const parsed = parseReference(ref)
  const explicitTag = ref.includes('@') || /:[^/]*$/.test(ref)
  return withCacheLock(layout, 'exclusive', onWait, async () => {
    const entries = listCached(layout).filter((e) => e.name === parsed.name && (!explicitTag || e.tag === parsed.localTag))
    if (entries.length === 0) {
      throw new HarnessError(
        'MIXTAPE_NOT_FOUND',
        `mixtape ${explicitTag ? `${parsed.name}:${parsed.localTag}` : parsed.name} is not in the cache (${layout.mixtapes})`,
        {
          fix: 'see what is cached with `stereos-harness ls`',
        },
      )
    }
    const candidates = entries.flatMap((e) => e.record?.blobs ?? [])
    for (const entry of entries) rmSync(entry.dir, { recursive: true, force: true })
    const nameDir = join(layout.mixtapes, parsed.name)
    if (subdirs(nameDir).length === 0 && readdirSync(nameDir).length === 0) rmSync(nameDir, { recursive: true, force: true })
    return { removed: entries.map(({ name, tag, dir }) => ({ name, tag, dir })), gc: collectGarbage(layout, { candidates }) }
  })
}

/** `prune`: blobs no tag uses, partial downloads, staging dirs of pulls that died. */
export async function pruneCache(layout: CacheLayout, onWait?: () => void): Promise<GcReport> {
  return withCacheLock(layout, 'exclusive', onWait, async () => collectGarbage(layout, { all: true }))
}

function remove(path: string): number {
  const size = existsSync(path) ? (statSync(path).isDirectory() ? dirSize(path) : statSync(path).size) : 0
  rmSync(path, { recursive: true, force: true })
  return size
}

function subdirs(dir: string): string[] {
  try {
    return readdirSync(dir, { withFileTypes: true })
      .filter((d) => d.isDirectory())
      .map((d) => d.name)
  } catch {
    return []
  }
}

function dirSize(dir: string): number {
  let total = 0
  for (const entry of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) total += statSync(join(entry.parentPath, entry.name)).size
  }
  return total
}
