import { execFileSync } from 'node:child_process'
import { chmodSync, existsSync, mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Sandbox } from '@stereos/harness'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { processExists, runtimeDir, vmDirs, waitForFile } from './support.js'

/**
 * One x86_64 fixture VM provisioned with everything stereosd offers, observed from inside the
 * guest: an agent started by agentd (user `agent`) writes what it sees into a 9p share.
 */
describe('x86_64 fixture: boot, provision, observe from the guest, shut down', () => {
  const runtime = runtimeDir()
  const out = mkdtempSync(join(tmpdir(), 'sh-out-'))
  const ro = mkdtempSync(join(tmpdir(), 'sh-ro-'))
  writeFileSync(join(ro, 'hello.txt'), 'from the host\n')
  // A read-only 9p share keeps host ownership (security_model=none), and stereosd's chown to
  // agent cannot apply to it: the guest's agent user needs the host dir to be world-readable.
  chmodSync(ro, 0o755)
  const observe = [
    'cd /mnt/out',
    'id -un > whoami',
    'cat /etc/stereos/jcard.toml > jcard.toml',
    'printf %s "$API_TOKEN" > secret-env',
    'cat /mnt/ro/hello.txt > ro-content',
    'if touch /mnt/ro/written 2>/dev/null; then echo writable; else echo read-only; fi > ro-write',
    'echo done > done',
  ].join('; ')
  const jcard = `mixtape = "fixture"\nname = "provision-e2e"\n\n[[agents]]\nname = "observer"\nharness = "custom"\ntype = "native"\nprompt = '''${observe}'''\n`
  let sandbox: Sandbox

  beforeAll(async () => {
    sandbox = await Sandbox.boot({
      arch: 'x86_64',
      runtimeDir: runtime,
      shared: [
        { host: out, guest: '/mnt/out' },
        { host: ro, guest: '/mnt/ro', readonly: true },
      ],
      secrets: { API_TOKEN: 'tok-123' },
      jcard,
      // This file observes stereosd and agentd through the jcard's own agent; test/e2e/agent.test.ts covers the guest agent.
      bootstrap: 'none',
    })
  })

  afterAll(async () => {
    await sandbox?.shutdown({ timeoutMs: 15_000 })
  })

  test('info describes the VM: arch, accel (TCG here, with the reason), transport, ports, timeline', () => {
    const { info } = sandbox
    expect(info.arch).toBe('x86_64')
    expect(['kvm', 'tcg']).toContain(info.accel)
    if (info.accel === 'tcg') expect(info.accelNote).toMatch(/KVM unusable|TCG requested/)
    // QEMU in a private network namespace (where the host allows one): unix sockets in the VM dir, no host ports.
    if (info.transport.kind === 'unix') {
      expect(info.transport.path).toBe(join(info.vmDir, 'control.sock'))
      expect(info.sockets.ssh).toBe(join(info.vmDir, 'ssh.sock'))
      expect(info.ports).toEqual({ ssh: undefined, control: undefined, agent: undefined })
    } else {
      expect(info.transport).toMatchObject({ kind: 'tcp', host: '127.0.0.1' })
      expect(info.ports.ssh).toBeGreaterThan(0)
    }
    // ssh-ready: boot resolved only once SSH with the per-VM key worked (sandbox.ssh is usable).
    // The VM was restored from the fixture's template (saved by this boot if it was the first of its kind).
    expect(info.template?.id).toMatch(/^[0-9a-f]{24}$/)
    expect(info.timeline.map((e) => e.phase)).toEqual([
      'mixtape-resolved',
      'disk-ready',
      'qemu-started',
      'restored',
      'stereosd-ready',
      'provisioned',
      'ssh-ready',
    ])
    expect(existsSync(sandbox.logs.serial)).toBe(true)
    expect(processExists(info.pid)).toBe(true)
  })

  test('set_config, inject_secret and both 9p mounts took effect, as seen by the agent agentd started', async () => {
    await waitForFile(join(out, 'done'), 60_000)
    const read = (name: string) => execFileSync('cat', [join(out, name)], { encoding: 'utf8' })
    expect(read('whoami').trim()).toBe('agent')
    expect(read('jcard.toml')).toBe(jcard)
    expect(read('secret-env')).toBe('tok-123')
    expect(read('ro-content')).toBe('from the host\n')
    expect(read('ro-write').trim()).toBe('read-only')
    expect(existsSync(join(ro, 'written'))).toBe(false)
  })

  test('stereosd reports healthy once agentd runs the agent', async () => {
    const deadline = Date.now() + 30_000
    let health = await sandbox.control.health()
    while (health.state !== 'healthy' && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 500))
      health = await sandbox.control.health()
    }
    expect(health.state).toBe('healthy')
    expect(health.agents).toEqual([expect.objectContaining({ name: 'observer', running: true })])
  })

  test('inject_ssh_key took effect: ssh as admin with the per-VM key reads back exactly that one key', () => {
    const ssh = sandbox.ssh!
    const keys = execFileSync('ssh', [...ssh.args, 'cat .ssh/authorized_keys'], { encoding: 'utf8', timeout: 60_000 })
    // ssh-keygen -y derives the public key from the private one (newer OpenSSH appends the comment).
    const pub = execFileSync('ssh-keygen', ['-y', '-f', ssh.keyPath], { encoding: 'utf8' }).split(' ').slice(0, 2).join(' ')
    expect(keys).toBe(`${pub}\n`)
  })

  test('shutdown goes through the control plane, ends QEMU cleanly and removes the VM dir', async () => {
    const { pid, vmDir } = sandbox.info
    const report = await sandbox.shutdown({ timeoutMs: 15_000 })
    expect(report).toMatchObject({ stoppedBy: 'control-plane', exit: { code: 0 }, keptDir: undefined })
    expect(processExists(pid)).toBe(false)
    expect(existsSync(vmDir)).toBe(false)
    expect(vmDirs(runtime)).toEqual([])
  })
})
