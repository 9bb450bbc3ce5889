import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { execa } from 'execa'
import { Sandbox } from '@stereos/harness'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { repoRoot, runtimeDir, vmDirs } from './support.js'
import { matches, RawConnection, requestBytes, type Transcript } from './transcript.js'

const transcripts = (JSON.parse(readFileSync(join(repoRoot, 'test', 'transcripts', 'stereosd.json'), 'utf8')) as Transcript[]).filter(
  (t) => t.fixture !== false,
)
const isShutdown = (t: Transcript) => t.steps.some((s) => s.request.includes('"shutdown"'))

/**
 * The fixture's stereosd (a test double, in a real guest) against the same golden transcripts
 * the host client is tested with. Raw lines, no host client: a bug cannot hide on both ends.
 */
describe('fixture stereosd speaks the stereosd protocol', () => {
  const runtime = runtimeDir()
  let sandbox: Sandbox
  let port: number | string

  beforeAll(async () => {
    // Raw lines over TCP: keep the TCP control plane even where the host has vhost-vsock.
    sandbox = await Sandbox.boot({ arch: 'x86_64', runtimeDir: runtime, controlPlane: 'tcp', bootstrap: 'none' })
    port = sandbox.info.sockets.control ?? sandbox.info.ports.control!
  })
  afterAll(async () => {
    await sandbox?.shutdown({ timeoutMs: 10_000 })
  })

  const replay = async (transcript: Transcript) => {
    const conn = await RawConnection.open(port)
    try {
      for (const step of transcript.steps) {
        conn.write(requestBytes(step))
        if (step.reply === null) continue
        const expected = step.expect ?? JSON.parse(step.reply)
        const line = await conn.next(10_000)
        expect(line, `reply to ${step.request}`).toBeTypeOf('string')
        const got = JSON.parse(line as string)
        expect(matches(expected, got), `reply to ${step.request}: got ${line}`).toBe(true)
      }
    } finally {
      conn.close()
    }
  }

  for (const transcript of transcripts.filter((t) => !isShutdown(t))) {
    test(transcript.name, () => replay(transcript))
  }

  /** A set_config line of exactly `bytes` bytes, its newline included. */
  const lineOf = (bytes: number) => {
    const [head, tail] = ['{"type":"set_config","payload":{"content":"', '"}}\n']
    return `${head}${'x'.repeat(bytes - head.length - tail.length)}${tail}`
  }

  test("a line of exactly 1 MiB with its newline is answered (bufio.Scanner's limit, §1.6a)", async () => {
    const conn = await RawConnection.open(port)
    conn.write(lineOf(1024 * 1024))
    expect(await conn.next(15_000)).toBe('{"type":"ack","payload":{"reply_to":"set_config","ok":true}}')
    conn.close()
  })

  test('a line one byte over 1 MiB makes stereosd drop that connection only; new connections work', async () => {
    const conn = await RawConnection.open(port)
    const other = await RawConnection.open(port)
    conn.write(lineOf(1024 * 1024 + 1))
    expect(await conn.next(15_000)).toBeUndefined()
    other.write('{"type":"ping"}\n')
    expect(await other.next(10_000)).toBe('{"type":"pong"}')
    other.close()
    const fresh = await RawConnection.open(port)
    fresh.write('{"type":"ping"}\n')
    expect(await fresh.next(10_000)).toBe('{"type":"pong"}')
    fresh.close()
  })

  test('requests on one connection are answered in order', async () => {
    const conn = await RawConnection.open(port)
    conn.write('{"type":"ping"}\n{"type":"get_health"}\n{"type":"frobnicate"}\n{"type":"ping"}\n')
    const types = []
    for (let i = 0; i < 4; i++) types.push(JSON.parse((await conn.next(10_000)) as string).type)
    expect(types).toEqual(['pong', 'health', 'ack', 'pong'])
    conn.close()
  })

  test("uptime_seconds is stereosd's monotonic age: a wall-clock jump (a restore's resync) does not move it", async () => {
    // Wall clock an hour ahead, as the resync after a template restore moves it by the template's age.
    const ssh = (script: string) => execa('ssh', [...sandbox.ssh!.args, script], { timeout: 30_000 })
    // The transcripts replaced admin's authorized_keys (inject_ssh_key overwrites it): ours again.
    await (await sandbox.connect()).injectSshKey('admin', readFileSync(`${sandbox.ssh!.keyPath}.pub`, 'utf8').trim())
    await ssh(`sudo -n date -u -s @${Math.round(Date.now() / 1000) + 3600}`)
    try {
      const conn = await RawConnection.open(port)
      conn.write('{"type":"get_health"}\n')
      const health = JSON.parse((await conn.next(10_000)) as string) as { payload: { uptime_seconds: number } }
      conn.close()
      // The guest's own boot-time clock: stereosd started after the kernel, so its age is smaller.
      const guestUptime = Number((await ssh('cat /proc/uptime')).stdout.split(' ')[0])
      expect(health.payload.uptime_seconds).toBeLessThanOrEqual(guestUptime)
    } finally {
      await ssh(`sudo -n date -u -s @${Math.round(Date.now() / 1000)}`)
    }
  })

  test('shutdown is acked, then the guest powers itself off', async () => {
    const transcript = transcripts.find(isShutdown)!
    await replay(transcript)
    await expect(sandbox.exited).resolves.toMatchObject({ code: 0 })
    // As a real stereosd with --poweroff signal-init (§1.6a): one power-off line, no word of the
    // SIGTERM to PID 1 (whose rcK powers off).
    const serial = readFileSync(sandbox.logs.serial, 'utf8')
    expect(serial).toMatch(/stereosd: shutdown: initiating power-off\r?\n[\s\S]*reboot: Power down/)
    expect(serial).not.toMatch(/stereosd: .*SIGTERM/)
    const report = await sandbox.shutdown()
    expect(report.stoppedBy).toBe('already-exited')
    expect(vmDirs(runtime)).toEqual([])
  })
})
