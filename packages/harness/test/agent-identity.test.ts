import { copyFileSync, chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import type { AgentClient } from '../src/agent-client/client.js'
import type { GuestProcess } from '../src/agent-client/process.js'
import { which } from '../src/host/which.js'
import { startLocalAgent, type LocalAgent } from './support/local-agent.js'
import { alive } from './support/proc.js'

const NOBODY = { uid: 65534, gid: 65534 }
/** A uid no passwd lists and nothing on this host runs as: the sweep kills every process of it. */
const SWEPT = { uid: 64123, gid: 64123 }
const OTHER = { uid: 64124, gid: 64124 }

const skip = process.getuid?.() !== 0 ? 'switching identities needs root' : !which('setpriv') ? 'needs setpriv (util-linux)' : undefined

function statusFields(text: string): Record<string, string> {
  const out: Record<string, string> = {}
  for (const line of text.split('\n')) {
    const m = /^(\w+):\s*(.*)$/.exec(line)
    if (m?.[1] !== undefined && m[2] !== undefined) out[m[1]] = m[2]
  }
  return out
}

/** Nice value of each thread of `pid` (field 19 of /proc/<pid>/task/<tid>/stat). */
function threadNices(pid: number): number[] {
  return readdirSync(`/proc/${pid}/task`).map((tid) => {
    const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8')
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16])
  })
}

const until = async (check: () => boolean, what: string) => {
  for (let i = 0; i < 200 && !check(); i++) await new Promise((r) => setTimeout(r, 25))
  if (!check()) throw new Error(`timed out waiting for ${what}`)
}

/** The agent's spawn as a numeric identity, with no_new_privs and a nice value, and its sweep, run locally as root. */
describe.skipIf(skip)('guest agent identities, no_new_privs, nice and sweep (run locally as root)', () => {
  let agent: LocalAgent
  let client: AgentClient
  const started: GuestProcess[] = []
  const work = mkdtempSync(join(tmpdir(), 'agent-identity-'))

  beforeAll(async () => {
    agent = await startLocalAgent()
    client = await agent.connect()
  })
  afterAll(async () => {
    for (const child of started) await child.kill('SIGKILL').catch(() => undefined)
    client?.close()
    await agent?.stop()
    rmSync(work, { recursive: true, force: true })
  })

  const status = async (options: Parameters<AgentClient['exec']>[2]) => {
    const r = await client.exec('cat', ['/proc/self/status'], { cwd: '/', ...options })
    expect(r.exitCode).toBe(0)
    return statusFields(r.stdout)
  }

  test('a numeric identity runs with that uid and gid and no supplementary groups; noNewPrivs sets NoNewPrivs', async () => {
    const plain = await status({ user: NOBODY })
    expect(plain.Uid).toBe('65534\t65534\t65534\t65534')
    expect(plain.Gid).toBe('65534\t65534\t65534\t65534')
    // libuv calls setgroups(0, NULL) before setgid/setuid when the parent is root.
    expect(plain.Groups).toBe('')
    expect(plain.NoNewPrivs).toBe('0')
    const locked = await status({ user: NOBODY, noNewPrivs: true })
    expect(locked).toMatchObject({ Uid: plain.Uid, Gid: plain.Gid, Groups: '', NoNewPrivs: '1' })
    // Root by name still works, under no_new_privs too.
    expect((await status({ user: 'root', noNewPrivs: true })).NoNewPrivs).toBe('1')
  })

  test('a numeric identity gets HOME and USER from passwd when it lists the uid, else HOME / and no USER', async () => {
    const env = async (user: { uid: number; gid: number }) => (await client.exec('sh', ['-c', 'echo "$HOME|${USER-unset}|$(pwd)"'], { user })).stdout.trim()
    const nobody = readFileSync('/etc/passwd', 'utf8')
      .split('\n')
      .find((line) => line.split(':')[2] === '65534')
      ?.split(':')
    const home = nobody?.[5] && existsSync(nobody[5]) ? nobody[5] : '/'
    expect(await env(NOBODY)).toBe(`${home}|${nobody?.[0] ?? 'unset'}|${home}`)
    expect(await env(SWEPT)).toBe('/|unset|/')
  })

  test('under noNewPrivs a setuid-root program does not raise the process to root', async () => {
    // A setuid-root copy of `id`, reachable (not listable) by the test user.
    chmodSync(work, 0o711)
    const id = join(work, 'suid-id')
    copyFileSync(which('id') as string, id)
    chmodSync(id, 0o4755)
    expect((await client.exec(id, ['-u'], { user: NOBODY, cwd: '/' })).stdout.trim()).toBe('0')
    expect((await client.exec(id, ['-u'], { user: NOBODY, cwd: '/', noNewPrivs: true })).stdout.trim()).toBe('65534')
  })

  test('uid 0 by number is refused; under noNewPrivs a missing command is still a spawn error that names it', async () => {
    await expect(client.exec('true', [], { user: { uid: 0, gid: 0 } })).rejects.toThrow(/uid 0 is refused here \(ask for user 'root' by name\)/)
    await expect(client.exec('no-such-command-xyz', [], { user: NOBODY, noNewPrivs: true })).rejects.toThrow(
      /cannot start no-such-command-xyz: .*not found on PATH/,
    )
    await expect(client.exec('/no/such/file', [], { user: NOBODY, noNewPrivs: true })).rejects.toThrow(/cannot start \/no\/such\/file: it does not exist/)
  })

  test('nice applies to the process as it starts; renice changes every thread, back to a higher priority too', async () => {
    const child = await client.spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { user: NOBODY, cwd: '/', noNewPrivs: true, nice: 19 })
    started.push(child)
    // Node has started its platform threads once it runs the script.
    await until(() => readdirSync(`/proc/${child.pid}/task`).length > 3, "node's threads")
    expect(new Set(threadNices(child.pid))).toEqual(new Set([19]))
    await child.renice(0)
    expect(new Set(threadNices(child.pid))).toEqual(new Set([0]))
    await child.kill('SIGKILL')
    await child.exited
    await expect(child.renice(0)).rejects.toThrow(/no running process with ref/)
  })

  test("sweep kills what a uid's earlier processes left behind (setsid too), keeps the kept process's tree and other uids", async () => {
    // An earlier process that leaves a session of its own behind, and then exits.
    const left = await client.exec('sh', ['-c', 'setsid sleep 300 </dev/null >/dev/null 2>&1 & echo $!'], { user: SWEPT, cwd: '/' })
    const leftover = Number(left.stdout.trim())
    const other = Number((await client.exec('sh', ['-c', 'setsid sleep 300 </dev/null >/dev/null 2>&1 & echo $!'], { user: OTHER, cwd: '/' })).stdout.trim())
    // The process being handed the next file, with a child of its own.
    const keeper = await client.spawn('sh', ['-c', 'sleep 300 & echo $!; wait'], { user: SWEPT, cwd: '/', noNewPrivs: true })
    started.push(keeper)
    const keeperChild = await new Promise<number>((resolve) => keeper.stdout.once('data', (d: Buffer) => resolve(Number(d.toString().trim()))))
    expect([leftover, other, keeper.pid, keeperChild].every(alive)).toBe(true)

    const killed = await client.sweep(SWEPT.uid, keeper.pid)
    expect(killed).toContain(leftover)
    expect(killed).not.toContain(keeper.pid)
    expect(killed).not.toContain(keeperChild)
    await until(() => !alive(leftover), 'the leftover to die')
    expect([keeper.pid, keeperChild, other].every(alive)).toBe(true)
    // Nothing left: a second sweep kills nothing.
    expect(await client.sweep(SWEPT.uid, keeper.pid)).toEqual([])

    // Without a process to keep, every one of the uid goes.
    expect(await client.sweep(OTHER.uid)).toEqual([other])
    await until(() => !alive(other), 'the other uid to be swept')
  })

  test('sweep refuses uid 0 (the agent is root) and keeping init or the kernel (their trees hold everything)', async () => {
    await expect(client.sweep(0, 1234)).rejects.toThrow(/sweep arguments\.uid: uid 0 is refused/)
    await expect(client.sweep(SWEPT.uid, 1)).rejects.toThrow(/keep must be the pid of a process, not 1/)
    await expect(client.sweep(SWEPT.uid, 0)).rejects.toThrow(/keep must be the pid of a process, not 0/)
  })
})
