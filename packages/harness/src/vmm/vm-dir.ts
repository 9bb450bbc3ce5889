import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { HarnessError } from '../errors.js'
import { isAlive, processArgv, processStartTime } from '../host/process.js'

/** Files of one VM, named as mb names them (STEREOS-FACTS §5.5). */
export interface VmPaths {
  id: string
  dir: string
  disk: string
  qmpSocket: string
  serialLog: string
  qemuLog: string
  pidfile: string
  sshKey: string
  jcard: string
}

interface Owner {
  pid: number
  start: string | undefined
}

export function defaultRuntimeDir(env = process.env): string {
  if (env.STEREOS_RUNTIME_DIR) return env.STEREOS_RUNTIME_DIR
  if (env.XDG_RUNTIME_DIR) return join(env.XDG_RUNTIME_DIR, 'stereos-harness')
  return join(tmpdir(), `stereos-harness-${process.getuid?.() ?? 'user'}`)
}

/** What createVmDir names VM dirs: `<prefix>-<pid>-<6 hex>`. The sweep touches nothing else. */
const VM_DIR_NAME = /^[a-z][a-z0-9]*-[1-9][0-9]*-[0-9a-f]{6}$/

/**
 * Create the runtime dir and its `vms/` (0700) if missing, and check both with lstat: a real
 * directory (not a symlink), owned by this uid, not writable by group or others. The default
 * lives in /tmp, where another local user can create it first: a `vms` symlink there would make
 * our sweep delete files it points at, and a dir they own would let them read our VMs' files.
 */
export function ensureRuntimeDir(runtimeDir: string): string {
  mkdirSync(runtimeDir, { recursive: true, mode: 0o700 })
  checkPrivateDir(runtimeDir, runtimeDir)
  const vms = join(runtimeDir, 'vms')
  try {
    mkdirSync(vms, { mode: 0o700 })
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
  }
  checkPrivateDir(vms, runtimeDir)
  return vms
}

function checkPrivateDir(path: string, runtimeDir: string): void {
  const uid = process.getuid?.()
  const s = lstatSync(path)
  const problem = s.isSymbolicLink()
    ? 'is a symbolic link'
    : !s.isDirectory()
      ? 'is not a directory'
      : uid !== undefined && s.uid !== uid
        ? `is owned by uid ${s.uid}, not by this user (uid ${uid})`
        : (s.mode & 0o022) !== 0
          ? `is writable by ${s.mode & 0o020 ? 'its group' : 'other users'} (mode ${(s.mode & 0o7777).toString(8).padStart(4, '0')})`
          : undefined
  if (!problem) return
  throw new HarnessError(
    'HOST',
    `the harness runtime dir ${path} ${problem}; another local user may have created it to read or delete this user's VM files, so it is not used`,
    {
      fix: `remove ${path} if it is not yours (or chmod 700 it if it is), or set STEREOS_RUNTIME_DIR (or the runtimeDir option) to a private directory; the runtime dir in use is ${runtimeDir}`,
    },
  )
}

/** Create `<runtime>/vms/<id>/` owned by this process. */
export function createVmDir(runtimeDir: string, prefix = 'vm'): VmPaths {
  const vms = ensureRuntimeDir(runtimeDir)
  const id = `${prefix}-${process.pid}-${randomBytes(3).toString('hex')}`
  const dir = join(vms, id)
  mkdirSync(dir, { mode: 0o700 })
  const owner: Owner = { pid: process.pid, start: processStartTime(process.pid) }
  writeFileSync(join(dir, 'owner.json'), JSON.stringify(owner))
  return {
    id,
    dir,
    disk: join(dir, 'disk.qcow2'),
    qmpSocket: join(dir, 'qmp.sock'),
    serialLog: join(dir, 'serial.log'),
    qemuLog: join(dir, 'qemu.log'),
    pidfile: join(dir, 'qemu.pid'),
    sshKey: join(dir, 'ssh_key'),
    jcard: join(dir, 'jcard.toml'),
  }
}

/** Mark a VM dir to be kept for forensics (keepOnFailure): sweeps leave it alone. */
export function markKept(dir: string, reason: string): void {
  writeFileSync(join(dir, 'kept'), `${new Date().toISOString()} ${reason}\n`)
}

export function removeVmDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true })
}

export interface SweepResult {
  removed: string[]
  killed: number[]
}

/**
 * Reap VM dirs whose owning process is gone (a runner that was SIGKILLed cannot clean up).
 * A QEMU still running from such a dir is killed first, but only if its argv names that dir,
 * so a reused PID is never hit. Dirs marked `kept` stay. Only real directories named like
 * createVmDir names them, owned by this uid, are candidates (the runtime dir is checked first).
 */
export function sweepOrphans(runtimeDir: string): SweepResult {
  const result: SweepResult = { removed: [], killed: [] }
  const vmsDir = ensureRuntimeDir(runtimeDir)
  const uid = process.getuid?.()
  for (const name of readdirSync(vmsDir)) {
    if (!VM_DIR_NAME.test(name)) continue
    const dir = join(vmsDir, name)
    const s = lstatSync(dir, { throwIfNoEntry: false })
    if (!s?.isDirectory() || (uid !== undefined && s.uid !== uid)) continue
    if (existsSync(join(dir, 'kept')) || ownerAlive(dir)) continue
    const qemuPid = readPid(join(dir, 'qemu.pid'))
    if (qemuPid !== undefined && processArgv(qemuPid)?.some((arg) => arg.includes(dir))) {
      try {
        process.kill(qemuPid, 'SIGKILL')
        result.killed.push(qemuPid)
      } catch {
        // already gone
      }
    }
    removeVmDir(dir)
    result.removed.push(dir)
  }
  return result
}

function ownerAlive(dir: string): boolean {
  let owner: Owner
  try {
    owner = JSON.parse(readFileSync(join(dir, 'owner.json'), 'utf8')) as Owner
  } catch {
    // No readable owner: either another process is between mkdir and writing owner.json
    // (young), or is removing its dir right now (gone: nothing to sweep), or the dir is debris (old).
    const s = statSync(dir, { throwIfNoEntry: false })
    return s === undefined || Date.now() - s.mtimeMs < 60_000
  }
  if (!isAlive(owner.pid)) return false
  return owner.start === undefined || processStartTime(owner.pid) === owner.start
}

export function readPid(path: string): number | undefined {
  try {
    const pid = Number.parseInt(readFileSync(path, 'utf8').trim(), 10)
    return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined
  } catch {
    return undefined
  }
}
