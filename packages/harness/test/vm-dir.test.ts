import { spawn, spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { chmodSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, test } from 'vitest'
import { isHarnessError } from '../src/errors.js'
import { isAlive } from '../src/host/process.js'
import { createVmDir, ensureRuntimeDir, markKept, sweepOrphans } from '../src/vmm/vm-dir.js'

/** PID of a process that has exited (a finished child). */
function deadPid(): number {
  return spawnSync('true').pid!
}

/** A name createVmDir could have given (`vm-<pid>-<hex>`), so the sweep considers it. */
function vmName(): string {
  return `vm-${deadPid()}-${randomBytes(3).toString('hex')}`
}

function orphanDir(runtime: string, name = vmName()): string {
  const dir = join(runtime, 'vms', name)
  mkdirSync(dir, { recursive: true })
  writeFileSync(join(dir, 'owner.json'), JSON.stringify({ pid: deadPid(), start: '1' }))
  return dir
}

describe('VM directories', () => {
  test('a new VM dir is owned by this process and holds nothing else yet', () => {
    const runtime = mkdtempSync(join(tmpdir(), 'sh-rt-'))
    const vm = createVmDir(runtime)
    expect(vm.dir.startsWith(join(runtime, 'vms'))).toBe(true)
    expect(vm.serialLog).toBe(join(vm.dir, 'serial.log'))
    expect(sweepOrphans(runtime).removed).toEqual([])
    expect(existsSync(vm.dir)).toBe(true)
  })

  test('the sweep removes dirs whose owner is gone, keeps live and kept ones', () => {
    const runtime = mkdtempSync(join(tmpdir(), 'sh-rt-'))
    const live = createVmDir(runtime)
    const orphan = orphanDir(runtime)
    const kept = orphanDir(runtime)
    markKept(kept, 'test')
    const result = sweepOrphans(runtime)
    expect(result.removed).toEqual([orphan])
    expect(existsSync(live.dir)).toBe(true)
    expect(existsSync(kept)).toBe(true)
  })

  test("the sweep kills an orphan's QEMU only when that process's argv names the dir", async () => {
    const runtime = mkdtempSync(join(tmpdir(), 'sh-rt-'))
    const orphan = orphanDir(runtime)
    const unrelatedDir = orphanDir(runtime)
    // Stand-ins for QEMU: one whose argv names its VM dir, one (a "reused PID") that does not.
    const idle = ['-e', 'setTimeout(() => {}, 300_000)']
    const named = spawn(process.execPath, [...idle, join(orphan, 'disk.qcow2')])
    const unrelated = spawn(process.execPath, idle)
    writeFileSync(join(orphan, 'qemu.pid'), `${named.pid}\n`)
    writeFileSync(join(unrelatedDir, 'qemu.pid'), `${unrelated.pid}\n`)
    await new Promise((resolve) => setTimeout(resolve, 100))
    const result = sweepOrphans(runtime)
    expect(result.killed).toEqual([named.pid])
    await new Promise((resolve) => named.once('exit', resolve))
    expect(isAlive(unrelated.pid!)).toBe(true)
    unrelated.kill()
    expect(result.removed.sort()).toEqual([orphan, unrelatedDir].sort())
  })
})

/** Issue 14 item 2: the default runtime dir is in /tmp, where another local user can create it first. */
describe('runtime dir: refused unless private to this user', () => {
  const temps: string[] = []
  afterAll(() => {
    for (const dir of temps) rmSync(dir, { recursive: true, force: true })
  })
  /** A parent like /tmp (world-writable, sticky), so another uid can create the runtime dir in it first. */
  const sharedTmp = () => {
    const dir = mkdtempSync(join(tmpdir(), 'sh-tmp-'))
    chmodSync(dir, 0o1777)
    temps.push(dir)
    return dir
  }
  const refusal = (fn: () => unknown) => {
    try {
      fn()
    } catch (err) {
      return err
    }
    throw new Error('expected a refusal')
  }
  const isRoot = process.getuid?.() === 0
  // An unused uid without a passwd entry: setpriv acts as it, so nothing is left to remove.
  const otherUid = 47_000 + (process.pid % 1000)

  test.skipIf(!isRoot)('a runtime dir another uid created first is refused, and nothing is written into it (needs root for setpriv)', () => {
    const runtime = join(sharedTmp(), `stereos-harness-${process.getuid?.()}`)
    const made = spawnSync('setpriv', [`--reuid=${otherUid}`, `--regid=${otherUid}`, '--clear-groups', 'mkdir', '-m', '0755', runtime], { encoding: 'utf8' })
    expect(made.status, made.stderr).toBe(0)
    expect(lstatSync(runtime).uid).toBe(otherUid)
    for (const fn of [() => createVmDir(runtime), () => sweepOrphans(runtime)]) {
      const err = refusal(fn)
      expect(isHarnessError(err, 'HOST')).toBe(true)
      expect((err as Error).message).toContain(`${runtime} is owned by uid ${otherUid}, not by this user`)
      expect((err as Error).message).toContain('STEREOS_RUNTIME_DIR')
    }
    expect(readdirSync(runtime)).toEqual([])
  })

  test('a runtime dir that is a symlink is refused, even to a directory this user owns', () => {
    const parent = sharedTmp()
    const real = mkdtempSync(join(tmpdir(), 'sh-real-'))
    temps.push(real)
    const runtime = join(parent, 'stereos-harness-x')
    symlinkSync(real, runtime)
    const err = refusal(() => createVmDir(runtime))
    expect(isHarnessError(err, 'HOST')).toBe(true)
    expect((err as Error).message).toContain(`${runtime} is a symbolic link`)
    expect(readdirSync(real)).toEqual([])
  })

  test('a `vms` symlink is refused by the sweep, and nothing it points at is deleted (not even VM-like names)', () => {
    const runtime = mkdtempSync(join(tmpdir(), 'sh-rt-'))
    temps.push(runtime)
    // The victim's own files, one of them named and shaped like an orphaned VM dir.
    const victim = mkdtempSync(join(tmpdir(), 'sh-victim-'))
    temps.push(victim)
    writeFileSync(join(victim, 'thesis.tex'), 'precious')
    const lookalike = join(victim, vmName())
    mkdirSync(lookalike)
    writeFileSync(join(lookalike, 'owner.json'), JSON.stringify({ pid: deadPid(), start: '1' }))
    symlinkSync(victim, join(runtime, 'vms'))
    const err = refusal(() => sweepOrphans(runtime))
    expect(isHarnessError(err, 'HOST')).toBe(true)
    expect((err as Error).message).toContain(`${join(runtime, 'vms')} is a symbolic link`)
    expect(refusal(() => createVmDir(runtime))).toBeInstanceOf(Error)
    expect(readdirSync(victim).sort()).toEqual([lookalike.slice(victim.length + 1), 'thesis.tex'].sort())
  })

  test('a runtime dir writable by others is refused; a 0755 one is accepted; a missing one is created 0700', () => {
    const parent = sharedTmp()
    const open = join(parent, 'open')
    mkdirSync(open)
    chmodSync(open, 0o777)
    expect((refusal(() => ensureRuntimeDir(open)) as Error).message).toContain(`${open} is writable by its group (mode 0777)`)
    const readable = join(parent, 'readable')
    mkdirSync(readable)
    chmodSync(readable, 0o755)
    expect(() => ensureRuntimeDir(readable)).not.toThrow()
    const fresh = join(parent, 'fresh')
    ensureRuntimeDir(fresh)
    expect(lstatSync(fresh).mode & 0o777).toBe(0o700)
    expect(lstatSync(join(fresh, 'vms')).mode & 0o777).toBe(0o700)
  })

  test('the sweep removes only dead VM dirs named like ours: other names, files and symlinks stay', () => {
    const runtime = mkdtempSync(join(tmpdir(), 'sh-rt-'))
    temps.push(runtime)
    const orphan = orphanDir(runtime)
    const notOurs = orphanDir(runtime, 'notes') // same content, a name createVmDir never makes
    const outside = mkdtempSync(join(tmpdir(), 'sh-outside-'))
    temps.push(outside)
    writeFileSync(join(outside, 'owner.json'), JSON.stringify({ pid: deadPid(), start: '1' }))
    const link = join(runtime, 'vms', vmName())
    symlinkSync(outside, link)
    writeFileSync(join(runtime, 'vms', vmName()), 'a file, not a dir')
    expect(sweepOrphans(runtime).removed).toEqual([orphan])
    expect(existsSync(notOurs)).toBe(true)
    expect(lstatSync(link).isSymbolicLink()).toBe(true)
    expect(readdirSync(outside)).toEqual(['owner.json'])
  })
})
