import { randomBytes } from 'node:crypto'
import { existsSync, lstatSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { Sandbox } from '@stereos/harness'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { runtimeDir } from '../e2e/support.js'

/**
 * Issue 14 item 9: a VM's secrets and its agent token must stay out of everything the host keeps
 * or shows: QEMU's argv and environment (readable by every local user through /proc), the
 * VM dir's files, qemu.log and serial.log, the harness's log and DEBUG trace lines, reports and
 * error messages. One fixture VM, booted with two secrets; the token is read back from inside
 * the guest (the agent's own environment), so the test knows what to look for without asking
 * the host.
 */

const SECRETS = { API_KEY: `sk-${randomBytes(12).toString('hex')}`, DB_PASSWORD: `pw-${randomBytes(12).toString('hex')}` }

/** Every regular file under `dir` (sockets, links and the like are not content). */
function filesUnder(dir: string): string[] {
  const out: string[] = []
  for (const name of readdirSync(dir)) {
    const path = join(dir, name)
    const s = lstatSync(path)
    if (s.isDirectory()) out.push(...filesUnder(path))
    else if (s.isFile()) out.push(path)
  }
  return out
}

/** Where, among named texts, any of `needles` occurs (expected: nowhere). */
function leaks(texts: Record<string, Buffer | string>, needles: string[]): string[] {
  const found: string[] = []
  for (const [where, text] of Object.entries(texts)) {
    const haystack = Buffer.isBuffer(text) ? text : Buffer.from(text)
    for (const needle of needles) if (haystack.includes(needle)) found.push(`${where} contains ${needle.slice(0, 6)}…`)
  }
  return found
}

describe('secrets and the agent token stay out of argv, files, logs and messages', () => {
  const runtime = runtimeDir()
  const output: string[] = []
  let sandbox: Sandbox
  let token: string
  let vmDir: string
  let qemuPid: number

  beforeAll(async () => {
    // Capture every stderr line of the boot (user log and DEBUG traces), still passing them on.
    const write = process.stderr.write.bind(process.stderr)
    const debug = process.env.DEBUG
    process.env.DEBUG = 'stereos:*'
    process.stderr.write = ((chunk: string | Uint8Array, ...rest: never[]) => {
      output.push(Buffer.from(chunk).toString('utf8'))
      return write(chunk, ...rest)
    }) as typeof process.stderr.write
    try {
      sandbox = await Sandbox.boot({ mixtape: 'fixture', arch: 'x86_64', runtimeDir: runtime, secrets: SECRETS }, { log: (line) => output.push(line) })
      const agent = await sandbox.agent()
      const environ = await sandbox.exec('cat', [`/proc/${agent.info.pid}/environ`])
      token = /(?:^|\0)STEREOS_HARNESS_TOKEN=([0-9a-f]+)\0/.exec(environ.stdout)?.[1] ?? ''
      vmDir = sandbox.info.vmDir
      qemuPid = sandbox.info.pid
    } finally {
      process.stderr.write = write
      if (debug === undefined) delete process.env.DEBUG
      else process.env.DEBUG = debug
    }
  })

  afterAll(async () => {
    await sandbox?.shutdown({ timeoutMs: 15_000 })
    rmSync(runtime, { recursive: true, force: true })
  })

  test('the guest did get the secrets and a token (so the searches below look for real values)', async () => {
    expect(token).toMatch(/^[0-9a-f]{64}$/)
    const agent = await sandbox.agent()
    const environ = (await sandbox.exec('cat', [`/proc/${agent.info.pid}/environ`])).stdout
    expect(environ).toContain(`API_KEY=${SECRETS.API_KEY}`)
  })

  test("QEMU's argv and environment name none of them", () => {
    const needles = [...Object.values(SECRETS), token]
    expect(leaks({ cmdline: readFileSync(`/proc/${qemuPid}/cmdline`), environ: readFileSync(`/proc/${qemuPid}/environ`) }, needles)).toEqual([])
  })

  test('no file of the VM dir holds them: qemu.log, serial.log, jcard, the disk overlay, …', () => {
    const files = filesUnder(vmDir)
    expect(files).toEqual(expect.arrayContaining([join(vmDir, 'qemu.log'), join(vmDir, 'serial.log'), join(vmDir, 'jcard.toml')]))
    expect(readFileSync(join(vmDir, 'serial.log'), 'utf8').length).toBeGreaterThan(0)
    const contents = Object.fromEntries(files.map((file) => [file, readFileSync(file)]))
    expect(leaks(contents, [...Object.values(SECRETS), token])).toEqual([])
  })

  test('the log and DEBUG trace lines of the boot, and the sandbox info, name none of them', () => {
    expect(output.join('\n')).toMatch(/stereos:boot/)
    expect(leaks({ log: output.join('\n'), info: JSON.stringify(sandbox.info) }, [...Object.values(SECRETS), token])).toEqual([])
  })

  test('error messages name none of them: failed ops, and a boot refused for bad options', async () => {
    const messages: string[] = []
    const collect = (promise: Promise<unknown>) =>
      promise.then(
        () => messages.push('(no error)'),
        (err: unknown) => messages.push(`${(err as Error).message}\n${(err as { fix?: string }).fix ?? ''}`),
      )
    await collect(sandbox.readFile('/run/stereos/secrets/API_KEY', { maxBytes: 1 }))
    await collect(sandbox.readFile('/nonexistent'))
    await collect(sandbox.exec('/no/such/command', [SECRETS.API_KEY.slice(0, 3)]))
    await collect(Sandbox.boot({ mixtape: 'fixture', runtimeDir: runtime, secrets: { 'bad name!': SECRETS.API_KEY } }))
    await collect(Sandbox.boot({ mixtape: 'fixture', runtimeDir: runtime, secrets: SECRETS, resources: { memory: 'lots' } }))
    expect(messages).toHaveLength(5)
    expect(messages.filter((m) => m === '(no error)')).toEqual([])
    expect(leaks(Object.fromEntries(messages.map((m, i) => [`error ${i}`, m])), [...Object.values(SECRETS), token])).toEqual([])
  })

  test('after shutdown nothing of the VM is left that could hold them', async () => {
    const report = await sandbox.shutdown({ timeoutMs: 15_000 })
    expect(leaks({ report: JSON.stringify(report) }, [...Object.values(SECRETS), token])).toEqual([])
    expect(existsSync(vmDir)).toBe(false)
  })
})
