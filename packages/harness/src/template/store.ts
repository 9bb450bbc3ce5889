import { randomBytes } from 'node:crypto'
import { chmodSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { z } from 'zod'
import { harnessCacheDir } from '../host/cache-dir.js'
import { acquireLocks } from '../host/lock.js'
import { templateDiskDefect, type DiskImage } from '../vmm/disk.js'
import { fileIdentity, TEMPLATE_FORMAT, type TemplateKey } from './key.js'

/**
 * Templates on disk, one directory per key under the harness cache:
 *
 *   templates/<id>/state.zst       the migration stream (guest RAM and device state), zstd
 *   templates/<id>/disk.qcow2      the guest disk as it was saved: a qcow2 over the mixtape's image
 *   templates/<id>/template.json   what it was made from, when, how big (written last; its
 *                                  mtime is the template's last use: saved or restored)
 *   templates/.locks/<id>.lock     flock: exclusive to build or remove, shared while restoring
 *   templates/.staging-<id>-…/     a build in progress (renamed into place when complete)
 *
 * A directory without template.json is not a template; readers never see a half-written one.
 */
export interface TemplatePaths {
  id: string
  dir: string
  state: string
  disk: string
  meta: string
}

const TemplateMeta = z.object({
  format: z.literal(TEMPLATE_FORMAT),
  id: z.string(),
  created: z.string(),
  saveMs: z.number(),
  stateBytes: z.number(),
  /** The guest agent was started in the saved guest (it waits for a lease's token). */
  agent: z.boolean(),
  mixtapeFiles: z.array(z.string()),
  describe: z.object({
    arch: z.string(),
    accel: z.string(),
    cpu: z.string(),
    cpus: z.number(),
    memoryMiB: z.number(),
    diskBytes: z.number(),
    qemu: z.string(),
    mixtape: z.string(),
  }),
})
type TemplateMeta = z.infer<typeof TemplateMeta>

export interface StoredTemplate {
  paths: TemplatePaths
  meta: TemplateMeta
  /** Bytes on disk (state and disk). */
  bytes: number
  /** When a boot last saved or restored it (template.json's mtime). */
  lastUsedMs: number
}

export function templatesRoot(cacheDir = harnessCacheDir()): string {
  return join(cacheDir, 'templates')
}

function templatePaths(root: string, id: string): TemplatePaths {
  return pathsIn(join(root, id), id)
}

/** A template's files in `dir` (its own, or a staging dir). */
function pathsIn(dir: string, id: string): TemplatePaths {
  return { id, dir, state: join(dir, 'state.zst'), disk: join(dir, 'disk.qcow2'), meta: join(dir, 'template.json') }
}

/** The complete template for `id`, or undefined (missing, half-written, or from another format). */
export function readTemplate(root: string, id: string): StoredTemplate | undefined {
  const paths = templatePaths(root, id)
  let meta: TemplateMeta
  try {
    meta = TemplateMeta.parse(JSON.parse(readFileSync(paths.meta, 'utf8')))
  } catch {
    return undefined
  }
  if (meta.id !== id || !existsSync(paths.state) || !existsSync(paths.disk)) return undefined
  return { paths, meta, bytes: sizeOf(paths.state) + sizeOf(paths.disk), lastUsedMs: mtimeOf(paths.meta) }
}

export function listTemplates(root: string): StoredTemplate[] {
  if (!existsSync(root)) return []
  return readdirSync(root)
    .filter((name) => /^[0-9a-f]{24}$/.test(name))
    .map((id) => readTemplate(root, id))
    .filter((t): t is StoredTemplate => t !== undefined)
}

/** Directories that are not templates: staging dirs of builds that died, and half-written ones. */
export function strayEntries(root: string): string[] {
  if (!existsSync(root)) return []
  return readdirSync(root)
    .filter((name) => name.startsWith('.staging-') || (/^[0-9a-f]{24}$/.test(name) && !readTemplate(root, name)))
    .map((name) => join(root, name))
}

export type Release = () => Promise<void>

/**
 * The templates dir, 0700 even if something made it before: a template holds a guest's RAM and
 * disk as booted (its sshd host key among them), for this user only.
 */
function ensureRoot(root: string): void {
  mkdirSync(root, { recursive: true, mode: 0o700 })
  chmodSync(root, 0o700)
}

export function lockTemplate(root: string, id: string, mode: 'shared' | 'exclusive', onWait?: () => void): Promise<Release> {
  ensureRoot(root)
  return acquireLocks([{ path: join(root, '.locks', `${id}.lock`), mode }], { onWait })
}

/** A fresh staging dir for a build of `key`; `commit` moves it into place with its metadata. */
export function stageTemplate(
  root: string,
  key: TemplateKey,
): { paths: TemplatePaths; commit(saveMs: number, agent: boolean): StoredTemplate; discard(): void } {
  ensureRoot(root)
  const dir = join(root, `.staging-${key.id}-${process.pid}-${randomBytes(3).toString('hex')}`)
  mkdirSync(dir, { mode: 0o700 })
  const staged = pathsIn(dir, key.id)
  return {
    paths: staged,
    commit(saveMs, agent) {
      const meta: TemplateMeta = {
        format: TEMPLATE_FORMAT,
        id: key.id,
        created: new Date().toISOString(),
        saveMs,
        stateBytes: sizeOf(staged.state),
        agent,
        mixtapeFiles: key.mixtapeFiles,
        describe: key.describe,
      }
      // This user's only, whatever the umask made them: templateDefect refuses anything looser.
      for (const file of [staged.state, staged.disk]) chmodSync(file, 0o600)
      writeFileSync(staged.meta, `${JSON.stringify(meta, null, 2)}\n`, { mode: 0o600 })
      const final = templatePaths(root, key.id)
      // Only the holder of the exclusive lock commits, so nothing else is at `final` but debris.
      rmSync(final.dir, { recursive: true, force: true })
      renameSync(dir, final.dir)
      return { paths: final, meta, bytes: sizeOf(final.state) + sizeOf(final.disk), lastUsedMs: mtimeOf(final.meta) }
    },
    discard() {
      rmSync(dir, { recursive: true, force: true })
    },
  }
}

/**
 * Why a stored template must not be loaded, or undefined. The templates dir may come from a
 * cache that was shared or restored (CI caches restore it): a template is loaded only when its
 * files are this user's, writable by no one else, plain files (no links), and its disk is a
 * qcow2 over exactly the mixtape's image (`base`): as much as a mixtape is checked.
 */
export async function templateDefect(root: string, template: StoredTemplate, base: DiskImage): Promise<string | undefined> {
  return templateFilesDefect(root, template) ?? (await templateDiskDefect(template.paths.disk, base))
}

/** The owner, mode and kind of the templates dir, the template's dir and its files. */
export function templateFilesDefect(root: string, template: StoredTemplate, uid = process.getuid?.()): string | undefined {
  const { dir, state, disk, meta } = template.paths
  // The root may be reached through a link (a cache dir on another disk); what it leads to is checked.
  const checks: [string, 'dir' | 'file', 'stat' | 'lstat'][] = [
    [root, 'dir', 'stat'],
    [dir, 'dir', 'lstat'],
    [state, 'file', 'lstat'],
    [disk, 'file', 'lstat'],
    [meta, 'file', 'lstat'],
  ]
  for (const [path, kind, how] of checks) {
    let st: ReturnType<typeof lstatSync>
    try {
      st = how === 'stat' ? statSync(path) : lstatSync(path)
    } catch (err) {
      return `${path} cannot be read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`
    }
    const mode = (st.mode & 0o777).toString(8).padStart(4, '0')
    if (st.isSymbolicLink()) return `${path} is a symbolic link`
    if (kind === 'dir' ? !st.isDirectory() : !st.isFile()) return `${path} is not a ${kind === 'dir' ? 'directory' : 'regular file'}`
    if (uid !== undefined && st.uid !== uid) return `${path} belongs to uid ${st.uid}, not this user (${uid})`
    if (kind === 'dir' && (st.mode & 0o777) !== 0o700) return `${path} has mode ${mode}, not 0700`
    if (kind === 'file' && (st.mode & 0o022) !== 0) return `${path} is writable by others (mode ${mode})`
  }
  return undefined
}

/** Record a restore: `prune --unused-since` keeps what a run used (e.g. before CI caches templates). */
export function markUsed(template: StoredTemplate): void {
  const now = new Date()
  try {
    utimesSync(template.paths.meta, now, now)
  } catch {
    // Removed meanwhile (a prune after our restore loaded it): nothing to record.
  }
}

/** Remove a template (callers hold its exclusive lock). Leases already running keep their open files. */
export function removeTemplate(root: string, id: string): void {
  rmSync(templatePaths(root, id).dir, { recursive: true, force: true })
}

function mtimeOf(path: string): number {
  try {
    return statSync(path).mtimeMs
  } catch {
    return 0
  }
}

function sizeOf(path: string): number {
  try {
    // Allocated bytes: a qcow2 over a large mixtape is sparse.
    return statSync(path).blocks * 512
  } catch {
    return 0
  }
}

/** A template whose mixtape files changed or vanished: no boot will ask for its key again. */
export function isStale(template: StoredTemplate): boolean {
  // `path:size:mtime`: the path is what precedes the last two fields (it may hold colons itself).
  return template.meta.mixtapeFiles.some((entry) => fileIdentity(entry.split(':').slice(0, -2).join(':')) !== entry)
}

export interface TemplatePruneReport {
  removed: string[]
  staging: string[]
  freedBytes: number
}

/**
 * Which templates `prune` removes besides stale ones: none, every one (the next boot of each kind
 * saves a new one), or those no boot saved or restored since a time.
 */
export type TemplatePruneScope = 'stale' | 'all' | { unusedBeforeMs: number }

/**
 * Remove stray staging dirs (builds that died), stale templates, and what `scope` adds. Each
 * removal holds the template's exclusive lock, so a restore in progress finishes first; a
 * staging dir of a live build is locked too.
 */
export async function pruneTemplates(root: string, scope: TemplatePruneScope): Promise<TemplatePruneReport> {
  const report: TemplatePruneReport = { removed: [], staging: [], freedBytes: 0 }
  const doomed = (t: StoredTemplate) => scope === 'all' || isStale(t) || (typeof scope === 'object' && t.lastUsedMs < scope.unusedBeforeMs)
  for (const template of listTemplates(root)) {
    if (!doomed(template)) continue
    const release = await lockTemplate(root, template.paths.id, 'exclusive')
    try {
      removeTemplate(root, template.paths.id)
      report.removed.push(template.paths.id)
      report.freedBytes += template.bytes
    } finally {
      await release()
    }
  }
  for (const path of strayEntries(root)) {
    const id = /([0-9a-f]{24})/.exec(path)?.[1]
    if (!id) continue
    const release = await lockTemplate(root, id, 'exclusive')
    try {
      if (!existsSync(path)) continue // a build that was running has committed or cleaned up
      report.freedBytes += dirBytes(path)
      rmSync(path, { recursive: true, force: true })
      report.staging.push(path)
    } finally {
      await release()
    }
  }
  return report
}

function dirBytes(dir: string): number {
  try {
    return readdirSync(dir).reduce((sum, name) => sum + sizeOf(join(dir, name)), 0)
  } catch {
    return 0
  }
}
