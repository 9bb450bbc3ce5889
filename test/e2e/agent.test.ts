import { createHash, randomBytes } from 'node:crypto'
import { mkdirSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { AgentClient, Sandbox, TcpTransport, UnixTransport, type HarnessError } from '@stereos/harness'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { runtimeDir } from './support.js'

/**
 * The guest agent in a real x86_64 fixture VM, started by agentd through the image's `agent`
 * launcher (bootstrap 'agentd', the default). One VM serves the whole file; the test that
 * kills the agent runs last.
 */
describe('guest agent, agentd bootstrap (x86_64)', () => {
  const runtime = runtimeDir()
  const work = mkdtempSync(join(tmpdir(), 'sh-agent-e2e-'))
  const logLines: string[] = []
  let sandbox: Sandbox

  beforeAll(async () => {
    sandbox = await Sandbox.boot({ arch: 'x86_64', runtimeDir: runtime }, { log: (line) => logLines.push(line) })
  })
  afterAll(async () => {
    await sandbox?.shutdown({ timeoutMs: 15_000 })
  })

  test('boot waits for the agent: it runs as `agent`, on the guest arch, with Node from the share', async () => {
    expect(sandbox.info.timeline.map((e) => e.phase)).toContain('agent-ready')
    const agent = await sandbox.agent()
    expect(agent.info).toMatchObject({ user: 'agent', root: false, arch: 'x64', node: 'v24.21.0', listen: 'tcp' })
    const r = await sandbox.exec('sh', ['-c', 'id -un; uname -m; pwd'])
    expect(r).toEqual({ exitCode: 0, signal: null, stdout: 'agent\nx86_64\n/home/agent\n', stderr: '' })
  })

  test("user: 'root' is refused under agentd (stereOS gives `agent` no sudo) and the error names the fix", async () => {
    await expect(sandbox.exec('id', [], { user: 'root' })).rejects.toThrow(/bootstrap: 'ssh'/)
  })

  test('100 MB through stdout arrive complete', async () => {
    const r = await sandbox.execBuffer('head', ['-c', '100000000', '/dev/zero'])
    expect(r.exitCode).toBe(0)
    expect(r.stdout.length).toBe(100_000_000)
    expect(r.stdout.every((b) => b === 0)).toBe(true)
  }, 300_000)

  test('binary files round-trip byte for byte; the guest sees the same sha256', async () => {
    const data = randomBytes(3 * 1024 * 1024 + 17)
    await sandbox.writeFile('/home/agent/blob.bin', data, { mode: 0o600 })
    const sum = await sandbox.exec('sha256sum', ['/home/agent/blob.bin'])
    expect(sum.stdout.split(' ')[0]).toBe(createHash('sha256').update(data).digest('hex'))
    expect((await sandbox.readFile('/home/agent/blob.bin')).equals(data)).toBe(true)
    expect(await sandbox.stat('/home/agent/blob.bin')).toMatchObject({ kind: 'file', size: data.length, mode: 0o600 })
  })

  test('copyIn/copyOut of a tree; shipping it again sends nothing', async () => {
    const src = join(work, 'tree')
    mkdirSync(join(src, 'sub'), { recursive: true })
    const payload = randomBytes(512 * 1024)
    writeFileSync(join(src, 'sub', 'data.bin'), payload)
    writeFileSync(join(src, 'tool.sh'), '#!/bin/sh\necho tool ran\n', { mode: 0o755 })
    const first = await sandbox.copyIn(src, '/home/agent/tree')
    expect(first.sentBytes).toBe(first.bytes)
    expect((await sandbox.exec('/home/agent/tree/tool.sh')).stdout).toBe('tool ran\n')
    const again = await sandbox.copyIn(src, '/home/agent/tree-again')
    expect(again.sentBytes).toBe(0)
    const back = join(work, 'back')
    await sandbox.copyOut('/home/agent/tree-again', back)
    expect(readFileSync(join(back, 'sub', 'data.bin')).equals(payload)).toBe(true)
    expect(statSync(join(back, 'tool.sh')).mode & 0o777).toBe(0o755)
  })

  test('50 concurrent execs', async () => {
    const results = await Promise.all(Array.from({ length: 50 }, (_, i) => sandbox.exec('sh', ['-c', `echo out-${i}; echo err-${i} >&2; exit ${i % 5}`])))
    results.forEach((r, i) => expect(r).toEqual({ exitCode: i % 5, signal: null, stdout: `out-${i}\n`, stderr: `err-${i}\n` }))
  }, 120_000)

  test('kill reaches the process; its exit reports the signal', async () => {
    const child = await sandbox.spawn('sleep', ['600'])
    await child.kill('SIGKILL')
    expect(await child.exited).toEqual({ exitCode: null, signal: 'SIGKILL' })
  })

  test('a connection with a wrong token is refused', async () => {
    const { sockets, ports } = sandbox.info
    const transport = sockets.agent ? new UnixTransport(sockets.agent, 1025) : new TcpTransport('127.0.0.1', ports.agent!)
    await expect(AgentClient.connect(transport, '0'.repeat(64))).rejects.toMatchObject({ code: 'AGENT_AUTH' })
    expect((await sandbox.exec('true')).exitCode).toBe(0)
  })

  test('the agent dying mid-exec fails the call with an error that names serial.log', async () => {
    const err = (await sandbox.exec('sh', ['-c', 'kill -9 $PPID; sleep 5']).then(
      () => undefined,
      (e: unknown) => e,
    )) as HarnessError
    expect(err?.code).toBe('AGENT_UNREACHABLE')
    expect(err.fix).toContain(sandbox.logs.serial)
    expect(err.logs.serial).toBe(sandbox.logs.serial)
  })

  test('the lost agent is started again once (agentd gets a changed [[agents]] entry), with a log line; a second loss is an error', async () => {
    // agentd keeps a native agent whose command died "running": only the harness can bring it back.
    const before = (await sandbox.exec('sh', ['-c', 'echo $PPID'])).stdout
    expect(logLines.filter((l) => l.includes('starting it again'))).toHaveLength(1)
    expect(logLines.find((l) => l.includes('starting it again'))).toMatch(/guest agent stopped answering .*through agentd/)
    const jcard = await sandbox.exec('cat', ['/etc/stereos/jcard.toml'])
    expect(jcard.stdout).toContain('STEREOS_HARNESS_AGENT_START = "2"')
    await sandbox.exec('sh', ['-c', 'kill -9 $PPID; sleep 5']).catch(() => undefined)
    const again = (await sandbox.exec('true').then(
      () => undefined,
      (e: unknown) => e,
    )) as HarnessError
    expect(again?.code).toBe('AGENT_UNREACHABLE')
    expect(logLines.filter((l) => l.includes('starting it again'))).toHaveLength(1)
    expect(before).toMatch(/^\d+\n$/)
  }, 120_000)
})

describe('guest agent, SSH bootstrap on a stock mixtape (no `agent` binary)', () => {
  test('admin + sudo start the agent as root: processes run as agent by default, as root on request; a lost agent is started over SSH again', async () => {
    const logLines: string[] = []
    await using sandbox = await Sandbox.boot(
      { arch: 'x86_64', mixtape: 'fixture-stock', bootstrap: 'ssh', runtimeDir: runtimeDir() },
      { log: (line) => logLines.push(line) },
    )
    expect((await sandbox.exec('sh', ['-c', 'test -e /usr/bin/agent && echo has-agent || echo no-agent'])).stdout).toBe('no-agent\n')
    expect((await sandbox.agent()).info).toMatchObject({ user: 'root', root: true })
    expect((await sandbox.exec('id', ['-un'])).stdout).toBe('agent\n')
    expect((await sandbox.exec('id', ['-un'], { user: 'root' })).stdout).toBe('root\n')
    await sandbox.writeFile('/etc/stereos-harness-test', 'root can write here\n', { user: 'root' })
    expect((await sandbox.exec('cat', ['/etc/stereos-harness-test'])).stdout).toBe('root can write here\n')
    // The root agent's child, as root, kills it; the next call finds it gone and starts it over SSH.
    await sandbox.exec('sh', ['-c', 'kill -9 $PPID; sleep 5'], { user: 'root' }).catch(() => undefined)
    expect((await sandbox.exec('id', ['-un'])).stdout).toBe('agent\n')
    expect(logLines.filter((l) => l.includes('starting it again over SSH'))).toHaveLength(1)
  }, 240_000)

  test('the agentd bootstrap on a mixtape without `agent` times out with a hint to use ssh', async () => {
    const err = (await Sandbox.boot({ arch: 'x86_64', mixtape: 'fixture-stock', runtimeDir: runtimeDir(), agentTimeoutMs: 15_000 }).then(
      async (s) => {
        await s.shutdown()
        return undefined
      },
      (e: unknown) => e,
    )) as HarnessError
    expect(err?.code).toBe('AGENT_UNREACHABLE')
    expect(err.fix).toMatch(/bootstrap: 'ssh'/)
    expect(err.fix).toContain('serial.log')
  }, 240_000)
})
