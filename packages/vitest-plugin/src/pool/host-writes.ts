import { constants, lstatSync, mkdirSync } from 'node:fs'
import { open, rm } from 'node:fs/promises'
import { isAbsolute, relative, resolve, sep } from 'node:path'
import { HarnessError } from '@stereos/harness'
import type { HostFsOp } from '../shared/host-fs.js'

/** Vitest's `snapshotOptions.updateSnapshot`: `all` with -u, `new` locally, `none` in CI. */
export type UpdateMode = 'all' | 'new' | 'none'

/**
 * What one guest worker may write on the host. `snapshotFiles` grows as the worker asks Vitest
 * to resolve the snapshot paths of the test files the pool sent it (the firewall checks the
 * call and learns the answer), so a `.snap` is writable only when Vitest itself named it for
 * one of this worker's files.
 */
export interface WritePolicy {
  /** The project root (a real path): file snapshots (`toMatchFileSnapshot`) must be under it. */
  projectRoot: string
  update: UpdateMode
  snapshotFiles: ReadonlySet<string>
  /**
   * The test files the pool sent this worker: Vitest writes new inline snapshots into the test
   * file itself (`toMatchInlineSnapshot()`), so these may be rewritten whenever Vitest updates
   * snapshots, as under forks. The guest already wrote that file's code.
   */
  testFiles: ReadonlySet<string>
}

function refuse(path: string, why: string): never {
  throw new HarnessError('INVALID_OPTIONS', `stereos: the guest may not write ${path} on the host: ${why}`, {
    fix: 'only snapshot files of the running test file (and toMatchFileSnapshot targets inside the project) are written back, and only when Vitest updates snapshots (-u, or new snapshots outside CI)',
  })
}

/**
 * Files a file snapshot may not create: snapshot files (another test file's `.snap`, which Vitest
 * evaluates), code (a new test, setup or config module that a later run would execute on a host)
 * and package manifests. `toMatchFileSnapshot` targets are data (`.html`, `.txt`, `.json`…).
 */
const NOT_A_FILE_SNAPSHOT = /(\.snap|\.[cm]?[jt]sx?|(^|\/)package\.json)$/

/** Parts of the project no snapshot lives in: package installs and dot-dirs (.git hooks, editor and CI config). */
function forbiddenPart(rel: string): string | undefined {
  return rel.split(sep).find((part) => part === 'node_modules' || part.startsWith('.'))
}

function exists(path: string): boolean {
  try {
    lstatSync(path)
    return true
  } catch {
    return false
  }
}

/**
 * Create the missing directories between `root` and `dir`, refusing any existing component that
 * is a symlink or not a directory: nothing may lead the write out of the tree.
 */
function safeParents(root: string, dir: string, path: string): void {
  let at = root
  for (const part of relative(root, dir).split(sep).filter(Boolean)) {
    at = resolve(at, part)
    let stat
    try {
      stat = lstatSync(at)
    } catch {
      mkdirSync(at)
      continue
    }
    if (stat.isSymbolicLink()) refuse(path, `${at} is a symbolic link`)
    if (!stat.isDirectory()) refuse(path, `${at} is not a directory`)
  }
}

/** Carry out one checked write or removal; throws a HarnessError naming the path when refused. */
export async function serveHostWrite(request: HostFsOp, policy: WritePolicy): Promise<void> {
  if (typeof request.path !== 'string' || !isAbsolute(request.path)) refuse(String(request.path), 'not an absolute path')
  const path = resolve(request.path)
  const root = policy.projectRoot
  const rel = relative(root, path)
  if (rel === '' || rel.startsWith(`..${sep}`) || rel === '..' || isAbsolute(rel)) refuse(path, `it is outside the project (${root})`)
  const snap = policy.snapshotFiles.has(path)
  const part = forbiddenPart(rel)
  if (part && !snap) refuse(path, `no snapshot is written under ${part}`)
  if (policy.update === 'none') refuse(path, 'this run does not update snapshots (CI without -u)')
  const existed = exists(path)
  if (request.op === 'remove') {
    if (!snap) refuse(path, 'only snapshot files Vitest resolved for this test file are removed')
    if (policy.update !== 'all') refuse(path, 'obsolete snapshots are removed only with -u')
    const stat = existed ? lstatSync(path) : undefined
    if (stat && !stat.isFile()) refuse(path, 'it is not a regular file')
    safeParents(root, resolve(path, '..'), path)
    await rm(path, { force: true })
    return
  }
  // A file snapshot that exists is overwritten only with -u; a `.snap` gains new entries in `new`
  // mode too, and so does a test file its new inline snapshots are written into.
  const own = snap || policy.testFiles.has(path)
  if (!own && existed && policy.update !== 'all') refuse(path, 'it exists, and file snapshots are overwritten only with -u')
  if (!own && NOT_A_FILE_SNAPSHOT.test(path))
    refuse(path, 'a file snapshot is data: snapshot files, code and package.json are written only for the test files the pool sent this worker')
  if (typeof request.data !== 'string') refuse(path, 'no text to write')
  safeParents(root, resolve(path, '..'), path)
  const flags = constants.O_WRONLY | constants.O_CREAT | constants.O_NOFOLLOW | (existed ? constants.O_TRUNC : constants.O_EXCL)
  let handle
  try {
    handle = await open(path, flags, 0o644)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    refuse(path, code === 'ELOOP' ? 'it is a symbolic link' : code === 'EEXIST' ? 'it appeared meanwhile' : (err as Error).message)
  }
  try {
    const stat = await handle.stat()
    if (!stat.isFile()) refuse(path, 'it is not a regular file')
    await handle.writeFile(request.data, 'utf8')
  } finally {
    await handle.close()
  }
}

/** What one guest worker may put on the host disk in all (snapshots, coverage results, attachments). */
const HOST_WRITE_LIMITS = { files: 10_000, bytes: 2 * 1024 ** 3 }

/**
 * Each write the guest causes is charged here first: a guest that writes many small snapshots,
 * coverage files under fresh uuids or attachments cannot fill the host's disk.
 */
export class WriteBudget {
  private files = 0
  private bytes = 0

  constructor(private readonly limits = HOST_WRITE_LIMITS) {}

  charge(path: string, size: number): void {
    if (this.files + 1 > this.limits.files || this.bytes + size > this.limits.bytes) {
      refuse(
        path,
        `this test file's process has already had ${this.files} files (${this.bytes} bytes) written on the host; the limit is ${this.limits.files} files, ${this.limits.bytes} bytes`,
      )
    }
    this.files++
    this.bytes += size
  }
}

/** Coverage JSON is large for big projects, but bounded: a runaway file must not become host memory. */
const COVERAGE_MAX_BYTES = 512 * 1024 ** 2

/**
 * Vitest's coverage providers (v8 and istanbul) write each worker's results to
 * `<reportsDirectory>/.tmp/coverage-<uuid>.json` and send only the file name; in the guest that
 * file lands in the VM's view. The pool copies it to the same path on the host before Vitest
 * reads it, and nothing else: the name must be one the providers make, in the provider's own
 * directory, created new and without following links.
 */
export async function copyCoverageFile(
  path: unknown,
  coverageDir: string | undefined,
  read: (path: string, maxBytes: number) => Promise<Buffer>,
): Promise<void> {
  if (typeof path !== 'string' || !coverageDir) refuse(String(path), "coverage results go only to the coverage provider's own directory")
  const file = resolve(path)
  if (resolve(file, '..') !== resolve(coverageDir) || !/^coverage-[0-9a-f-]{36}\.json$/.test(file.slice(resolve(coverageDir).length + 1))) {
    refuse(file, `coverage results go only to ${coverageDir}/coverage-<uuid>.json`)
  }
  const dir = lstatSync(coverageDir, { throwIfNoEntry: false })
  if (!dir?.isDirectory()) refuse(file, `${coverageDir} is not a directory`)
  const bytes = await read(file, COVERAGE_MAX_BYTES)
  let handle
  try {
    handle = await open(file, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o644)
  } catch (err) {
    refuse(file, (err as Error).message)
  }
  try {
    await handle.writeFile(bytes)
  } finally {
    await handle.close()
  }
}
