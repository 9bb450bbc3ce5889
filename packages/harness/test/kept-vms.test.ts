import { spawn } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, test } from 'vitest'
import { findKeptVm, listKeptVms, stopKeptVm, type KeptVm } from '../src/kept-vms.js'

const runtime = mkdtempSync(join(tmpdir(), 'kept-vms-'))
const children: number[] = []
afterAll(() => {
  for (const pid of children) {
    try {
      process.kill(pid, 'SIGKILL')
    } catch {
      // gone
    }
  }
})

/** A VM dir with a kept.json whose "QEMU" is a real process naming the dir in its argv, as QEMU does. */
function keptDir(id: string, options: { alive: boolean; record?: Partial<KeptVm> }): { dir: string; pid: number } {
  const dir = join(runtime, 'vms', id)
  mkdirSync(dir, { recursive: true })
  let pid = 999_999
  if (options.alive) {
    const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)', join(dir, 'disk.qcow2')], { stdio: 'ignore' })
    pid = child.pid as number
    children.push(pid)
  }
  const record: KeptVm = {
    id,
    pid,
    vmDir: dir,
    arch: 'x86_64',
    mixtape: 'fixture',
    ssh: ['-i', join(dir, 'ssh_key'), 'admin@x'],
    reason: 'a.test.ts failed',
    keptAt: new Date().toISOString(),
    ...options.record,
  }
  writeFileSync(join(dir, 'kept.json'), JSON.stringify(record))
  writeFileSync(join(dir, 'kept'), 'kept\n')
  return { dir, pid }
}

describe('kept VMs registry (#13.8)', () => {
  test('lists kept VMs with whether their QEMU runs (by pid and argv, so a reused pid does not count); a record naming another dir is ignored', () => {
    keptDir('vm-1-aaaaaa', { alive: true })
    keptDir('vm-1-bbbbbb', { alive: false })
    // A live pid that is not this VM's QEMU (this test's own process): not running.
    keptDir('vm-1-cccccc', { alive: false, record: { pid: process.pid } })
    keptDir('vm-1-dddddd', { alive: false, record: { vmDir: '/somewhere/else' } })
    const listed = listKeptVms(runtime).map((vm) => [vm.id, vm.running])
    expect(listed.sort()).toEqual([
      ['vm-1-aaaaaa', true],
      ['vm-1-bbbbbb', false],
      ['vm-1-cccccc', false],
    ])
  })

  test('stop ends the QEMU and removes the dir; an unknown id names the kept ones', async () => {
    const { dir, pid } = keptDir('vm-2-eeeeee', { alive: true })
    expect(await stopKeptVm('vm-2-eeeeee', runtime)).toEqual({ wasRunning: true })
    expect(existsSync(dir)).toBe(false)
    await new Promise((r) => setTimeout(r, 100))
    expect(() => process.kill(pid, 0)).toThrow()
    expect(() => findKeptVm('vm-9-ffffff', runtime)).toThrow(/no kept VM vm-9-ffffff[\s\S]*kept VMs: vm-1-aaaaaa/)
    // A stopped one is removed without signalling anyone (its pid may be someone else's now).
    expect(await stopKeptVm('vm-1-cccccc', runtime)).toEqual({ wasRunning: false })
  })
})
