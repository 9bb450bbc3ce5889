import { Sandbox } from '@stereos/harness'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { runtimeDir } from './support.js'

/**
 * What the pool relies on to run test files unprivileged, in a real x86_64 fixture VM with a root
 * agent (bootstrap 'ssh'): a process spawned as a numeric uid/gid under no_new_privs cannot use
 * sudo even as admin (who has passwordless sudo), and the agent's sweeps kill what an earlier
 * process left behind in a session of its own: by uid, and by worker cgroup (root's workers too).
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

  test("a root worker's `setsid sleep` is in its cgroup under /sys/fs/cgroup/stereos-harness, and gone after sweepWorkers; the agent lives on", async () => {
    const agent = await sandbox.agent()
    const running = async (pid: number) =>
      (await sandbox.exec('sh', ['-c', `grep -q '^State:.*[RSD]' /proc/${pid}/status && echo yes || echo no`], { user: 'root' })).stdout.trim()
    const left = await sandbox.exec('sh', ['-c', 'setsid sleep 600 </dev/null >/dev/null 2>&1 & echo $!; cat /proc/self/cgroup'], {
      user: 'root',
      noNewPrivs: true,
      worker: true,
      cwd: '/',
    })
    const [pid, cgroup] = left.stdout.trim().split('\n')
    const leftover = Number(pid)
    expect(cgroup).toMatch(/^0::\/stereos-harness\/w\d+-\d+$/)
    const cgroupDir = `/sys/fs/cgroup${cgroup?.slice(3)}`
    expect(await running(leftover)).toBe('yes')
    const keeper = await sandbox.spawn('sleep', ['600'], { user: 'root', noNewPrivs: true, worker: true, cwd: '/' })

    const killed = await agent.sweepWorkers(keeper.pid)
    expect(killed).toContain(leftover)
    expect(killed).not.toContain(keeper.pid)
    expect(await running(leftover)).toBe('no')
    expect(await running(keeper.pid)).toBe('yes')
    expect((await sandbox.exec('sh', ['-c', `test -e ${cgroupDir} && echo present || echo gone`], { user: 'root' })).stdout.trim()).toBe('gone')
    // The agent (root, like the swept processes) still serves, on the same connection.
    expect(await running(agent.info.pid)).toBe('yes')
    await keeper.kill('SIGKILL')
  }, 60_000)
})
