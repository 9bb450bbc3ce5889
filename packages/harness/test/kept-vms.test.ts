import { execFileSync, spawn } from 'node:child_process'
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, test, vi } from 'vitest'
import { remoteCommand, sshCommand } from '../src/cli/kept.js'
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

/** Words a shell would split, expand or glob, and the empty word. */
const AWKWARD = ['one two', "it's", '$HOME', '`id`', '*', '', 'a\\b', 'line\nbreak', 'FOO=1', '~', '-x', '"q"', ';', '!']

describe('stereos-harness ssh ID -- CMD keeps its argv (#20)', () => {
  test('remoteCommand: a POSIX shell parses it back into exactly the words given', () => {
    // What sshd does with the command line: the login shell's `-c`.
    const line = remoteCommand([process.execPath, '-e', 'process.stdout.write(JSON.stringify(process.argv.slice(1)))', ...AWKWARD])
    expect(JSON.parse(execFileSync('sh', ['-c', line], { encoding: 'utf8', env: { HOME: '/nowhere' } }))).toEqual(AWKWARD)
    // Plain words stay readable.
    expect(remoteCommand(['ls', '-la', '/tmp/x.log'])).toBe('ls -la /tmp/x.log')
  })

  test("through ssh: `-- sh -c 'echo one two'` prints one two", async () => {
    keptDir('vm-3-abcdef', { alive: true })
    // An ssh(1) that does what OpenSSH does with a command: the words after the destination,
    // joined by spaces, run by the remote shell with -c (here: locally, output to a file).
    const bin = mkdtempSync(join(tmpdir(), 'fake-ssh-'))
    const out = join(bin, 'out')
    writeFileSync(
      join(bin, 'ssh'),
      `#!/bin/sh
while [ $# -gt 0 ]; do case "$1" in -[ioplFJ]) shift 2 ;; -*) shift ;; *) shift; break ;; esac; done
exec sh -c "$*" > '${out}'
`,
    )
    chmodSync(join(bin, 'ssh'), 0o755)
    vi.stubEnv('PATH', `${bin}:${process.env.PATH}`)
    vi.stubEnv('STEREOS_RUNTIME_DIR', runtime)
    try {
      expect(await sshCommand({ id: 'vm-3-abcdef', command: ['sh', '-c', 'echo one two'] })).toBe(0)
      expect(readFileSync(out, 'utf8')).toBe('one two\n')
      expect(await sshCommand({ id: 'vm-3-abcdef', command: ['printf', '[%s]\\n', ...AWKWARD] })).toBe(0)
      expect(readFileSync(out, 'utf8')).toBe(AWKWARD.map((w) => `[${w}]\n`).join(''))
    } finally {
      vi.unstubAllEnvs()
    }
  })
})
