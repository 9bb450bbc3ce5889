import { spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, test } from 'vitest'
import { isAlive } from '../src/host/process.js'
import { createVmDir, markKept, sweepOrphans } from '../src/vmm/vm-dir.js'

/** PID of a process that has exited (a finished child). */
function deadPid(): number {
  return spawnSync('true').pid!
}

function orphanDir(runtime: string, name: string): string {
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
    const orphan = orphanDir(runtime, 'vm-orphan')
    const kept = orphanDir(runtime, 'vm-kept')
    markKept(kept, 'test')
    const result = sweepOrphans(runtime)
    expect(result.removed).toEqual([orphan])
    expect(existsSync(live.dir)).toBe(true)
    expect(existsSync(kept)).toBe(true)
  })

  test("the sweep kills an orphan's QEMU only when that process's argv names the dir", async () => {
    const runtime = mkdtempSync(join(tmpdir(), 'sh-rt-'))
    const orphan = orphanDir(runtime, 'vm-with-qemu')
    const unrelatedDir = orphanDir(runtime, 'vm-pid-reused')
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
