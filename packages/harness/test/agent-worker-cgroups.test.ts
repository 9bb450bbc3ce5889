import { existsSync, readdirSync, readFileSync, rmdirSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import type { AgentClient } from '../src/agent-client/client.js'
import type { GuestProcess } from '../src/agent-client/process.js'
import { cgroup2Mount } from '../src/guest-agent/worker-cgroups.js'
import { which } from '../src/host/which.js'
import { startLocalAgent, type LocalAgent } from './support/local-agent.js'
import { alive } from './support/proc.js'

/** A uid nothing on this host runs as. */
const USER = { uid: 64131, gid: 64131 }
const mount = cgroup2Mount()
/** Its own parent cgroup: a sweep reaches every worker under the parent, so tests running at once must not share one. */
const PARENT_NAME = `stereos-harness-test-${process.pid}`

const skip =
  process.getuid?.() !== 0 ? 'making cgroups needs root' : !which('setpriv') ? 'needs setpriv (util-linux)' : !mount ? 'needs cgroup2 mounted' : undefined

/** The cgroup2 path of `pid` (the `0::` line of /proc/<pid>/cgroup). */
function cgroupOf(pid: number): string {
  return /^0::(.*)$/m.exec(readFileSync(`/proc/${pid}/cgroup`, 'utf8'))?.[1] ?? ''
}

const until = async (check: () => boolean, what: string) => {
  for (let i = 0; i < 200 && !check(); i++) await new Promise((r) => setTimeout(r, 25))
  if (!check()) throw new Error(`timed out waiting for ${what}`)
}

/** The pids a process printed, one a line, once it has printed `count` of them. */
function printedPids(child: GuestProcess, count: number): Promise<number[]> {
  return new Promise((resolve) => {
    let text = ''
    child.stdout.on('data', (chunk: Buffer) => {
      text += chunk.toString()
      const pids = text.split('\n').filter(Boolean).map(Number)
      if (pids.length >= count) resolve(pids)
    })
  })
}

/** A worker that leaves two processes in sessions of their own: a `setsid sleep` and a detached Node (as hostile/j-leftover-1 does). */
const LEAVER = [
  'setsid sleep 300 </dev/null >/dev/null 2>&1 & echo $!',
  `"${process.execPath}" -e "const c = require('child_process').spawn('sleep', ['301'], { detached: true, stdio: 'ignore' }); console.log(c.pid); c.unref()"`,
  'sleep 300',
].join('; ')

/** The worker cgroups under `parent` (its files are the parent's own). */
function cgroupsIn(parent: string): string[] {
  return readdirSync(parent, { withFileTypes: true })
    .filter((entry) => entry.isDirectory())
    .map((entry) => entry.name)
}

describe.skipIf(skip)('worker cgroups: each worker in a cgroup of its own, swept whatever its uid (run locally as root)', () => {
  let agent: LocalAgent
  let client: AgentClient
  const parent = join(mount ?? '/nonexistent', PARENT_NAME)
  const started: GuestProcess[] = []

  beforeAll(async () => {
    agent = await startLocalAgent(undefined, ['--worker-cgroups', PARENT_NAME])
    client = await agent.connect()
  })
  afterAll(async () => {
    for (const child of started) await child.kill('SIGKILL').catch(() => undefined)
    await client?.sweepWorkers().catch(() => undefined)
    client?.close()
    await agent?.stop()
    if (existsSync(parent)) rmdirSync(parent)
  })

  test('a worker is in a fresh cgroup under the parent before its program runs, with no_new_privs, its uid and no extra fd', async () => {
    // What the program sees first thing: its cgroup, identity and open fds.
    const script = 'cat /proc/self/cgroup; grep -E "^(Uid|NoNewPrivs):" /proc/self/status; echo fds; ls /proc/$$/fd'
    const fds = (stdout: string) => stdout.slice(stdout.indexOf('fds\n')).split('\n').filter(Boolean).sort()
    const plain = await client.exec('sh', ['-c', script], { user: 'root', cwd: '/' })
    const asUser = await client.exec('sh', ['-c', script], { user: USER, noNewPrivs: true, worker: true, cwd: '/' })
    const asRoot = await client.exec('sh', ['-c', script], { user: 'root', noNewPrivs: true, worker: true, cwd: '/' })
    for (const r of [asUser, asRoot]) {
      expect(r.exitCode).toBe(0)
      expect(r.stdout).toMatch(new RegExp(`^0::.*/${PARENT_NAME}/w\\d+-\\d+$`, 'm'))
      expect(r.stdout).toContain('NoNewPrivs:\t1\n')
      // The gate pipe was closed before the program started: it has the fds a plain process has.
      expect(fds(r.stdout)).toEqual(fds(plain.stdout))
    }
    expect(asUser.stdout).toContain(`Uid:\t${USER.uid}\t${USER.uid}\t${USER.uid}\t${USER.uid}\n`)
    expect(asRoot.stdout).toContain('Uid:\t0\t0\t0\t0\n')
    const cgroups = [asUser, asRoot].map((r) => /^0::(.*)$/m.exec(r.stdout)?.[1])
    expect(cgroups[0]).not.toBe(cgroups[1])
    // A process that is no worker stays where the agent is.
    expect((await client.exec('cat', ['/proc/self/cgroup'], { user: 'root' })).stdout).toContain(`0::${cgroupOf(agent.child.pid as number)}\n`)
  })

  test("sweepWorkers kills what a root worker left (setsid, double fork), keeps the kept worker's cgroup, other processes and the agent", async () => {
    const earlier = await client.spawn('sh', ['-c', LEAVER], { user: 'root', noNewPrivs: true, worker: true, cwd: '/' })
    started.push(earlier)
    const leftovers = await printedPids(earlier, 2)
    const earlierCgroup = cgroupOf(earlier.pid)
    await earlier.kill('SIGKILL')
    await earlier.exited
    expect(leftovers.every(alive)).toBe(true)
    // Same uid (root), no worker: not the sweep's.
    const bystander = await client.spawn('sleep', ['300'], { user: 'root', cwd: '/' })
    started.push(bystander)
    const keeper = await client.spawn('sh', ['-c', 'sleep 300 & echo $!; wait'], { user: 'root', noNewPrivs: true, worker: true, cwd: '/' })
    started.push(keeper)
    const [keeperChild] = await printedPids(keeper, 1)

    const killed = await client.sweepWorkers(keeper.pid)
    expect(killed).toEqual(expect.arrayContaining(leftovers))
    expect(killed).not.toContain(keeper.pid)
    await until(() => !leftovers.some(alive), 'the leftovers to die')
    expect([keeper.pid, keeperChild as number, bystander.pid, agent.child.pid as number].every(alive)).toBe(true)
    // The earlier worker's cgroup is gone; the kept one's is all that is left.
    expect(existsSync(join(mount as string, earlierCgroup.replace(/^\/+/, '')))).toBe(false)
    expect(cgroupsIn(parent)).toEqual([cgroupOf(keeper.pid).split('/').pop()])
    // Nothing left: a second sweep finds nothing; the agent still serves.
    expect(await client.sweepWorkers(keeper.pid)).toEqual([])
    expect((await client.exec('true', [], { user: 'root' })).exitCode).toBe(0)

    // Without a worker to keep, every worker goes.
    expect(await client.sweepWorkers()).toEqual(expect.arrayContaining([keeper.pid, keeperChild]))
    await keeper.exited
    expect(cgroupsIn(parent)).toEqual([])
  })

  test('a non-root worker cannot move itself out of its cgroup, to the parent or the root', async () => {
    const r = await client.exec(
      'sh',
      ['-c', `for d in "${parent}" "${mount}"; do echo $$ > "$d/cgroup.procs" && echo "moved to $d"; done; cat /proc/self/cgroup`],
      { user: USER, noNewPrivs: true, worker: true, cwd: '/' },
    )
    expect(r.stdout).not.toContain('moved to')
    expect(r.stderr).toMatch(/Permission denied/)
    expect(r.stdout).toMatch(new RegExp(`^0::.*/${PARENT_NAME}/w\\d+-\\d+$`, 'm'))
  })

  test('a worker whose start fails leaves no cgroup behind', async () => {
    await client.sweepWorkers()
    await expect(client.exec('true', [], { user: USER, worker: true, cwd: '/no/such/dir' })).rejects.toThrow(/cannot start true/)
    expect(cgroupsIn(parent)).toEqual([])
  })

  test("when the host's connection goes, what its workers left goes too", async () => {
    const other = await agent.connect()
    const worker = await other.spawn('sh', ['-c', LEAVER], { user: USER, noNewPrivs: true, worker: true, cwd: '/' })
    const leftovers = await printedPids(worker, 2)
    expect(leftovers.every(alive)).toBe(true)
    other.close()
    await until(() => !leftovers.some(alive), "the closed connection's leftovers to die")
    await until(() => cgroupsIn(parent).length === 0, 'its cgroup to be removed')
  })
})

describe.skipIf(skip)('worker cgroups off (a guest without cgroup2): root workers refused, non-root ones start without a cgroup', () => {
  let agent: LocalAgent
  let client: AgentClient

  beforeAll(async () => {
    agent = await startLocalAgent(undefined, ['--worker-cgroups', 'none'])
    client = await agent.connect()
  })
  afterAll(async () => {
    client?.close()
    await agent?.stop()
  })

  test('a root worker is an AGENT error naming the cause; a non-root one runs where the agent is; sweepWorkers kills nothing', async () => {
    await expect(client.exec('true', [], { user: 'root', worker: true, cwd: '/' })).rejects.toThrow(
      /cannot start true as a worker running as root: worker cgroups are off \(agent --worker-cgroups none\), so what it leaves running could not be swept/,
    )
    const r = await client.exec('cat', ['/proc/self/cgroup'], { user: USER, noNewPrivs: true, worker: true, cwd: '/' })
    expect(r.exitCode).toBe(0)
    expect(r.stdout).toContain(`0::${cgroupOf(agent.child.pid as number)}\n`)
    expect(await client.sweepWorkers()).toEqual([])
  })
})
