import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
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
  efiVars: string
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

/** Create `<runtime>/vms/<id>/` owned by this process. */
export function createVmDir(runtimeDir: string, prefix = 'vm'): VmPaths {
  const id = `${prefix}-${process.pid}-${randomBytes(3).toString('hex')}`
  const dir = join(runtimeDir, 'vms', id)
  mkdirSync(dir, { recursive: true, mode: 0o700 })
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
    efiVars: join(dir, 'efi-vars.fd'),
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
 * so a reused PID is never hit. Dirs marked `kept` stay.
 */
export function sweepOrphans(runtimeDir: string): SweepResult {
  const result: SweepResult = { removed: [], killed: [] }
  const vmsDir = join(runtimeDir, 'vms')
  let entries: string[]
  try {
    entries = readdirSync(vmsDir)
  } catch {
    return result
  }
  for (const name of entries) {
    const dir = join(vmsDir, name)
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
    // (young), or the dir is debris (old).
    return Date.now() - statSync(dir).mtimeMs < 60_000
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
