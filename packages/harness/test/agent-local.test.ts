import { createHash, randomBytes } from 'node:crypto'
import { mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import type { AgentClient } from '../src/agent-client/client.js'
import { encodeFrame, FrameType } from '../src/wire/frame.js'
import { startLocalAgent, type LocalAgent } from './support/local-agent.js'

/** The real agent, run on this host over TCP: ops, limits and failures, without a VM (test/e2e runs it in guests). */
describe('guest agent (run locally)', () => {
  let agent: LocalAgent
  let client: AgentClient
  const work = mkdtempSync(join(tmpdir(), 'agent-local-'))

  beforeAll(async () => {
    agent = await startLocalAgent()
    client = await agent.connect()
  })
  afterAll(async () => {
    client?.close()
    await agent?.stop()
    rmSync(work, { recursive: true, force: true })
  })

  test('exec returns stdout, stderr and the exit code; env and cwd apply; the token is not in the env', async () => {
    const r = await client.exec('sh', ['-c', 'echo "$FOO $(pwd)"; echo oops >&2; env | grep -c STEREOS_HARNESS_TOKEN; exit 3'], {
      env: { FOO: 'bar' },
      cwd: '/tmp',
    })
    expect(r).toEqual({ exitCode: 3, signal: null, stdout: 'bar /tmp\n0\n', stderr: 'oops\n' })
  })

  test('input goes to stdin; binary output survives byte for byte', async () => {
    const input = randomBytes(3 * 1024 * 1024)
    const r = await client.execBuffer('cat', [], { input })
    expect(r.stdout.equals(input)).toBe(true)
  })

  test('a missing command is an error that names it', async () => {
    await expect(client.exec('no-such-command-xyz')).rejects.toThrow(/cannot start no-such-command-xyz: no-such-command-xyz was not found on PATH/)
  })

  test('50 concurrent execs each get their own output', async () => {
    const results = await Promise.all(
      Array.from({ length: 50 }, (_, i) => client.exec('sh', ['-c', `echo ${i}; sleep 0.0${i % 10}; echo ${i} >&2; exit ${i % 7}`])),
    )
    results.forEach((r, i) => expect(r).toEqual({ exitCode: i % 7, signal: null, stdout: `${i}\n`, stderr: `${i}\n` }))
  })

  test('kill ends the process group; the exit reports the signal', async () => {
    const child = await client.spawn('sh', ['-c', 'sleep 30 & sleep 30; echo never'])
    await new Promise((r) => setTimeout(r, 200))
    await child.kill('SIGTERM')
    expect(await child.exited).toEqual({ exitCode: null, signal: 'SIGTERM' })
  })

  test('timeoutMs kills a command that runs too long; maxBuffer stops a flood', async () => {
    await expect(client.exec('sleep', ['30'], { timeoutMs: 300 })).rejects.toThrow(/ran longer than 300 ms/)
    await expect(client.exec('head', ['-c', '5000000', '/dev/zero'], { maxBuffer: 1000 })).rejects.toThrow(/stdout exceeded maxBuffer \(1000 bytes\)/)
  })

  test('a slow reader stalls the process (flow control) instead of buffering without bound', async () => {
    const child = await client.spawn('head', ['-c', '64000000', '/dev/zero'])
    await new Promise((r) => setTimeout(r, 500))
    // Nothing consumed: the host buffers at most one window plus the stream's high-water mark.
    expect(child.stdout.readableLength).toBeLessThanOrEqual(1024 * 1024 + 64 * 1024)
    let total = 0
    for await (const chunk of child.stdout) total += (chunk as Buffer).length
    expect(total).toBe(64_000_000)
    expect((await child.exited).exitCode).toBe(0)
  })

  test('the ipc channel is a raw duplex on the process fd 3', async () => {
    const child = await client.spawn(process.execPath, ['-e', "const s=require('net').Socket({fd:3});s.on('data',d=>s.end('echo:'+d))"], { ipc: true })
    const ipc = child.ipc as NonNullable<typeof child.ipc>
    const reply = new Promise<string>((resolve) => {
      let got = ''
      ipc.on('data', (d: Buffer) => (got += d.toString()))
      ipc.on('end', () => resolve(got))
    })
    ipc.write('ping')
    expect(await reply).toBe('echo:ping')
    expect((await child.exited).exitCode).toBe(0)
  })

  test('writeFile/readFile round-trip binary content with the mode; stat sees it', async () => {
    const data = randomBytes(1024 * 1024 + 3)
    const path = join(work, 'guest', 'nested', 'f.bin')
    await client.writeFile(path, data, { mode: 0o640 })
    expect((await client.readFile(path)).equals(data)).toBe(true)
    expect(await client.stat(path)).toMatchObject({ kind: 'file', size: data.length, mode: 0o640 })
    expect(await client.stat(join(work, 'nope'))).toBeNull()
    await expect(client.readFile(join(work, 'nope'))).rejects.toThrow(/ENOENT/)
  })

  test('copyIn/copyOut move a tree (files, modes, empty dirs, symlinks); content already in the guest is not sent again', async () => {
    const src = join(work, 'src')
    mkdirSync(join(src, 'a', 'b'), { recursive: true })
    mkdirSync(join(src, 'empty'))
    const big = randomBytes(2 * 1024 * 1024)
    writeFileSync(join(src, 'a', 'big.bin'), big)
    writeFileSync(join(src, 'a', 'b', 'run.sh'), '#!/bin/sh\necho hi\n', { mode: 0o755 })
    writeFileSync(join(src, 'copy.bin'), big)
    symlinkSync('a/big.bin', join(src, 'link'))
    const first = await client.copyIn(src, join(work, 'in'))
    expect(first).toEqual({ files: 3, bytes: 2 * big.length + 18, sentBytes: big.length + 18 })
    const again = await client.copyIn(src, join(work, 'in2'))
    expect(again.sentBytes).toBe(0)
    const back = join(work, 'back')
    const out = await client.copyOut(join(work, 'in2'), back)
    expect(out.files).toBe(3)
    expect(readFileSync(join(back, 'a', 'big.bin')).equals(big)).toBe(true)
    expect(statSync(join(back, 'a', 'b', 'run.sh')).mode & 0o777).toBe(0o755)
    expect(statSync(join(back, 'empty')).isDirectory()).toBe(true)
    expect(readlinkSync(join(back, 'link'))).toBe('a/big.bin')
  })

  test('a tree entry that escapes its root is refused', async () => {
    const hash = createHash('sha256').update('x').digest('hex')
    await expect(
      client.peer.request('place', { root: join(work, 'esc'), entries: [{ path: '../../etc/evil', kind: 'file', mode: 0o644, hash }] }),
    ).rejects.toThrow(/is not inside/)
  })

  test('a blob whose bytes do not match its hash is rejected and not stored', async () => {
    const channel = client.peer.openChannel()
    const hash = createHash('sha256').update('right').digest('hex')
    const put = client.peer.request('putBlob', { hash, size: 5, channel: channel.id })
    channel.end('wrong')
    await expect(put).rejects.toThrow(/arrived as 5 bytes with sha256/)
    expect((await client.peer.request('missing', { hashes: [hash] })).missing).toEqual([hash])
  })

  test("user: 'root' on an agent that is not root names the bootstrap that gives root", async () => {
    if (process.getuid?.() === 0) {
      // This agent runs as root here; the non-root refusal is covered in the guest (test/e2e).
      expect(client.info.root).toBe(true)
      return
    }
    await expect(client.exec('id', [], { user: 'root' })).rejects.toThrow(/bootstrap: 'ssh'/)
  })

  test('an op that fails before it starts fails alone: the connection stays up', async () => {
    await expect(client.exec('true', [], { cwd: '/nonexistent-dir' })).rejects.toThrow(/cannot start true/)
    await expect(client.peer.request('place', { root: 'relative/root', entries: [] })).rejects.toThrow(/must be absolute/)
    expect(client.closed).toBe(false)
    expect((await client.exec('echo', ['still here'])).stdout).toBe('still here\n')
  })

  test('a wrong token is refused; the agent keeps serving the right one', async () => {
    await expect(agent.connect('b'.repeat(64))).rejects.toMatchObject({ code: 'AGENT_AUTH' })
    expect((await client.exec('true')).exitCode).toBe(0)
  })

  test('fuzz: random and oversized frames from connected peers close their connection, never the agent', async () => {
    for (let i = 0; i < 30; i++) {
      const sock = connect(agent.port, '127.0.0.1')
      const closed = new Promise<void>((resolve) => sock.on('close', () => resolve()))
      sock.on('error', () => undefined)
      if (i % 3 === 0) sock.write(randomBytes(1 + Math.floor(Math.random() * 20_000)))
      else if (i % 3 === 1) sock.write(Buffer.concat([encodeFrame(0, FrameType.HELLO, Buffer.alloc(0)).subarray(0, 5)]))
      else {
        const huge = encodeFrame(0, FrameType.HELLO)
        huge.writeUInt32BE(0x7fffffff, 0)
        sock.write(huge)
      }
      if (i % 3 === 1) setTimeout(() => sock.end(), 50)
      await closed
    }
    expect(agent.child.exitCode).toBeNull()
    expect((await client.exec('echo', ['alive'])).stdout).toBe('alive\n')
  })

  test('when the host connection drops, the processes it started are killed', async () => {
    const other = await agent.connect()
    const child = await other.spawn('sleep', ['300'])
    other.close()
    await new Promise((r) => setTimeout(r, 300))
    const alive = await client.exec('sh', ['-c', `kill -0 ${child.pid} 2>/dev/null && echo alive || echo gone`])
    expect(alive.stdout).toBe('gone\n')
  })
})
