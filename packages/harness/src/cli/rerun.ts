import type { SpawnOptions } from '../agent-client/process.js'
import { type PoolCaptureContext, REMOUNT_VIEW_SCRIPT, remountArgs, rerunArgs } from '../capture/reopen.js'
import { HarnessError } from '../errors.js'
import { GuestPortForward } from '../sandbox/guest-port.js'
import type { Sandbox } from '../sandbox/sandbox.js'

/** The test processes' environment in the guest (as the pool gives its workers, less Vitest's own). */
function testEnv(pool: PoolCaptureContext): Record<string, string> {
  return { HOME: pool.home, STEREOS_SANDBOX: '1', PATH: '/run/current-system/sw/bin:/usr/local/bin:/usr/bin:/bin' }
}

/** Put the project view back at its CI paths, over the local checkout (REMOUNT_VIEW_SCRIPT). */
export async function remountView(sandbox: Sandbox, pool: PoolCaptureContext): Promise<void> {
  const result = await sandbox.exec('sh', ['-c', REMOUNT_VIEW_SCRIPT, 'stereos-view', ...remountArgs(pool)], { user: 'root' })
  if (result.exitCode !== 0)
    throw new HarnessError('CAPTURE', `the restored VM could not mount the project view again: ${result.stderr.trim() || `exit ${result.exitCode}`}`, {
      fix: `the guest needs 9p and overlay (it had them when captured); see ${sandbox.logs.serial}`,
    })
}

/**
 * Become the test user and run a command in a directory, as the pool's workers are: that uid and
 * gid, no supplementary groups. The guest's Node does it (a guest's `setpriv` may be busybox's,
 * which cannot change ids); a signal from the terminal goes to the command, not to this.
 */
const AS_TEST_USER = `
const [uid, gid, cwd, cmd, ...args] = process.argv.slice(1)
process.setgroups([]); process.setgid(Number(gid)); process.setuid(Number(uid)); process.chdir(cwd)
for (const s of ['SIGINT', 'SIGQUIT', 'SIGTSTP']) process.on(s, () => {})
const r = require('child_process').spawnSync(cmd, args, { stdio: 'inherit' })
process.exit(r.status ?? 128)
`

/** The remote command (run by admin over SSH) that runs CMD, or an interactive shell, as the test user in Vitest's root, with the tests' HOME. */
export function testUserCommand(pool: PoolCaptureContext, exec: string | undefined): string[] {
  const { uid, gid } = pool.testUser
  const env = Object.entries(testEnv(pool)).map(([k, v]) => `${k}=${v}`)
  const as = ['sudo', '-n', 'env', ...env, pool.node, '-e', AS_TEST_USER, String(uid), String(gid), pool.root]
  if (exec !== undefined) return [...as, 'sh', '-c', exec]
  return [...as, 'sh', '-c', 'if command -v bash >/dev/null; then exec bash -i; else exec sh -i; fi']
}

/**
 * `debug --rerun`: Vitest itself runs the failing file again in the restored VM, as the test user
 * in Vitest's root, with forks (the stereos pool would boot VMs inside the VM: STEREOS_RERUN tells
 * the plugin it is already in one) and the inspector, forwarded to the host's 127.0.0.1.
 * Its output is this command's; the exit status is Vitest's.
 */
export async function rerunFile(sandbox: Sandbox, pool: PoolCaptureContext, inspect: { brk: boolean; port: number }): Promise<number> {
  // The Node the file's worker ran on (the test user could run it): the new agent's may be a root-only copy.
  const node = (await sandbox.stat(pool.node)) ? pool.node : (await sandbox.agent()).info.execPath
  const { uid, gid } = pool.testUser
  const options: SpawnOptions = {
    user: uid === 0 ? 'root' : { uid, gid },
    noNewPrivs: true,
    cwd: pool.root,
    env: { ...testEnv(pool), ...colors(), STEREOS_RERUN: '1' },
  }
  const guestPort = 9229
  const forward = await GuestPortForward.open(sandbox, node, guestPort, inspect.port, 'pass another host port: --inspect-port N')
  try {
    process.stderr.write(
      `rerunning ${pool.file} in ${sandbox.info.id}; debugger: attach to 127.0.0.1:${forward.port}${inspect.brk ? ' (Vitest waits for it)' : ''}\n`,
    )
    const child = await sandbox.spawn(node, rerunArgs(pool, { brk: inspect.brk, port: guestPort }), options)
    child.stdout.pipe(process.stdout, { end: false })
    child.stderr.pipe(process.stderr, { end: false })
    const exit = await child.exited
    return exit.exitCode ?? 128
  } finally {
    forward.close()
  }
}

/** Vitest in the guest writes to a pipe: it colors its output as this terminal would. */
function colors(): Record<string, string> {
  if (process.env.NO_COLOR !== undefined) return { NO_COLOR: '1' }
  if (process.env.FORCE_COLOR !== undefined || process.stdout.isTTY) return { FORCE_COLOR: '1' }
  return { NO_COLOR: '1' }
}
