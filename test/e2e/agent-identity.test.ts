import { Sandbox } from '@stereos/harness'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { runtimeDir } from './support.js'

/**
 * What the pool relies on to run test files unprivileged, in a real x86_64 fixture VM with a root
 * agent (bootstrap 'ssh'): a process spawned as a numeric uid/gid under no_new_privs cannot use
 * sudo even as admin (who has passwordless sudo), and the agent's sweep kills what an earlier
 * process of that uid left behind in a session of its own.
 */
describe('guest agent: numeric identities, no_new_privs and the sweep (x86_64, root agent)', () => {
  let sandbox: Sandbox
  let admin: { uid: number; gid: number }

  beforeAll(async () => {
    sandbox = await Sandbox.boot({ arch: 'x86_64', bootstrap: 'ssh', runtimeDir: runtimeDir() })
    const fields = (await sandbox.readFile('/etc/passwd'))
      .toString('utf8')
      .split('\n')
      .find((line) => line.startsWith('admin:'))
      ?.split(':')
    admin = { uid: Number(fields?.[2]), gid: Number(fields?.[3]) }
    expect(admin.uid).toBeGreaterThan(0)
  }, 240_000)
  afterAll(async () => {
    await sandbox?.shutdown({ timeoutMs: 15_000 })
  })

  test("as admin's uid under noNewPrivs, `sudo -n true` is refused for the no_new_privs flag; no supplementary groups", async () => {
    const locked = await sandbox.exec('sh', ['-c', 'grep -E "^(Uid|Groups|NoNewPrivs):" /proc/self/status; sudo -n true; echo "sudo exit $?"'], {
      user: admin,
      noNewPrivs: true,
      cwd: '/',
    })
    expect(locked.stdout).toContain(`Uid:\t${admin.uid}\t${admin.uid}\t${admin.uid}\t${admin.uid}\n`)
    expect(locked.stdout).toMatch(/^Groups:\s*$/m)
    expect(locked.stdout).toContain('NoNewPrivs:\t1\n')
    expect(locked.stdout).toMatch(/sudo exit [1-9]/)
    // sudo's own words: it saw the flag (not a missing group or password) and refused to run.
    expect(locked.stderr).toMatch(/no new privileges/i)
  }, 60_000)

  test('sweep kills a `setsid sleep` an earlier process left behind, and keeps the kept process', async () => {
    const left = await sandbox.exec('sh', ['-c', 'setsid sleep 600 </dev/null >/dev/null 2>&1 & echo $!'], { user: admin, noNewPrivs: true, cwd: '/' })
    const leftover = Number(left.stdout.trim())
    expect(leftover).toBeGreaterThan(1)
    const keeper = await sandbox.spawn('sleep', ['600'], { user: admin, noNewPrivs: true, cwd: '/' })
    const running = async (pid: number) =>
      (await sandbox.exec('sh', ['-c', `grep -q '^State:.*[RSD]' /proc/${pid}/status && echo yes || echo no`], { user: 'root' })).stdout.trim()
    expect(await running(leftover)).toBe('yes')

    const killed = await (await sandbox.agent()).sweep(admin.uid, keeper.pid)
    expect(killed).toContain(leftover)
    expect(killed).not.toContain(keeper.pid)
    expect(await running(leftover)).toBe('no')
    expect(await running(keeper.pid)).toBe('yes')
    await keeper.kill('SIGKILL')
  }, 60_000)
})
