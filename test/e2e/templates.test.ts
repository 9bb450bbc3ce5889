import { execFileSync, spawn } from 'node:child_process'
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeSync } from 'node:fs'
import { homedir, tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { Sandbox } from '@stereos/harness'
import { afterAll, describe, expect, test } from 'vitest'
import { processExists, repoRoot, runtimeDir } from './support.js'

/**
 * VM templates with real QEMU and the fixture guest, in a private harness cache (the share and
 * guest Node linked from the real one): a save killed half-way, two processes racing to build
 * the same template, what a template must not hold, and a damaged one.
 */
const realCache = process.env.STEREOS_HARNESS_CACHE ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'stereos-harness')
const cache = mkdtempSync(join(tmpdir(), 'sh-template-cache-'))
for (const name of ['share', 'guest-node']) {
  mkdirSync(join(realCache, name), { recursive: true })
  symlinkSync(join(realCache, name), join(cache, name))
}
const templates = join(cache, 'templates')
const runtime = runtimeDir()
const secret = `tpl-secret-${randomBytes(8).toString('hex')}`

afterAll(() => rmSync(cache, { recursive: true, force: true }))

/** Boots `count` VMs at once in a child process, reports each as a JSON line, shuts them down. */
const CHILD = `
import { readFileSync } from 'node:fs'
import { Sandbox } from '@stereos/harness'
// node -e: the arguments start at argv[1].
const [count, secret, runtimeDir, bootstrap] = [Number(process.argv[1]), process.argv[2], process.argv[3], process.argv[4]]
const sandboxes = await Promise.all(Array.from({ length: count }, () => Sandbox.boot({ arch: 'x86_64', runtimeDir, bootstrap, secrets: { TPL_SECRET: secret } })))
for (const s of sandboxes) {
  const date = await s.exec('date', ['-u', '+%s'])
  const publicKey = readFileSync(s.ssh.keyPath + '.pub', 'utf8').split(' ')[1]
  // An agent started over SSH runs as root: it can show whose keys admin's sshd accepts.
  const keys = bootstrap === 'ssh' ? (await s.exec('cat', ['/home/admin/.ssh/authorized_keys'], { user: 'root' })).stdout : undefined
  const token = bootstrap === 'ssh' ? (await s.exec('cat', ['/run/stereos/secrets/STEREOS_HARNESS_TOKEN'], { user: 'root' })).stdout.trim() : undefined
  const endpoint = JSON.stringify([s.info.ports, s.info.sockets])
  process.stdout.write(JSON.stringify({ id: s.info.id, template: s.info.template, pid: s.info.pid, skew: Number(date.stdout) - Date.now() / 1000, publicKey, keys, token, endpoint }) + '\\n')
}
await Promise.all(sandboxes.map((s) => s.shutdown()))
`

interface Booted {
  id: string
  template: { id: string; built: boolean; agent: boolean } | undefined
  pid: number
  skew: number
  publicKey: string
  keys: string | undefined
  /** The agent token the lease injected, as the guest holds it. */
  token: string | undefined
  /** The VM's forwarded ports and sockets. */
  endpoint: string
}

function child(
  count: number,
  bootstrap: 'agentd' | 'ssh' = 'agentd',
): { exited: Promise<{ code: number | null; stdout: string; stderr: string }>; pid: number; kill(): void; output(): string } {
  const proc = spawn(process.execPath, ['--input-type=module', '-e', CHILD, String(count), secret, runtime, bootstrap], {
    cwd: repoRoot,
    env: { ...process.env, STEREOS_HARNESS_CACHE: cache, STEREOS_TEMPLATE: 'auto' },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let stdout = ''
  let stderr = ''
  proc.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
  proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
  const exited = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) =>
    proc.once('close', (code) => resolve({ code, stdout, stderr })),
  )
  return { exited, pid: proc.pid!, kill: () => proc.kill('SIGKILL'), output: () => stdout + stderr }
}

const staging = () => (existsSync(templates) ? readdirSync(templates).filter((name) => name.startsWith('.staging-')) : [])
const committed = () => (existsSync(templates) ? readdirSync(templates).filter((name) => /^[0-9a-f]{24}$/.test(name)) : [])

describe('VM templates (fixture guest, real QEMU)', () => {
  test('a runner killed (SIGKILL) while it saves a template leaves no template, only a staging dir that prune removes later', async () => {
    const run = child(1)
    let state: string | undefined
    for (let i = 0; i < 6_000 && !state; i++) {
      state = staging()
        .map((dir) => join(templates, dir, 'state.zst'))
        .find((path) => existsSync(path))
      if (!state) await new Promise((resolve) => setTimeout(resolve, 20))
    }
    expect(state, `the save never started: ${run.output()}`).toBeDefined()
    run.kill()
    await run.exited
    expect(committed()).toEqual([])
    expect(staging()).toHaveLength(1)
  }, 240_000)

  test('two runners racing with no template: it is saved once, with the agent running, and every VM (8, four at once in each) is restored from it with the host clock', async () => {
    // Both start their agents over SSH, as the pool does: the template holds the agent.
    const [a, b] = [child(4, 'ssh'), child(4, 'ssh')]
    const [ra, rb] = await Promise.all([a.exited, b.exited])
    expect(ra.code, ra.stderr).toBe(0)
    expect(rb.code, rb.stderr).toBe(0)
    const stderr = ra.stderr + rb.stderr
    expect(stderr.match(/saved VM template [0-9a-f]{24}/g)).toHaveLength(1)
    expect(stderr).toMatch(/waiting for another boot to save VM template/)
    const booted = (ra.stdout + rb.stdout)
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as Booted)
    expect(booted).toHaveLength(8)
    const ids = new Set(booted.map((vm) => vm.template?.id))
    expect(ids.size).toBe(1)
    expect([...ids][0]).toMatch(/^[0-9a-f]{24}$/)
    expect(booted.filter((vm) => vm.template?.built)).toHaveLength(1)
    for (const vm of booted) expect(vm.template?.agent).toBe(true)
    // Eight VMs of their own: ids, endpoints, tokens and keys all differ.
    for (const field of ['id', 'endpoint', 'token', 'publicKey'] as const) expect(new Set(booted.map((vm) => vm[field])).size, field).toBe(8)
    for (const vm of booted) expect(vm.token).toMatch(/^[0-9a-f]{64}$/)
    // The key the build used to start the agent is gone: admin's sshd takes this lease's key alone.
    for (const vm of booted) expect(vm.keys).toBe(`ssh-ed25519 ${vm.publicKey}\n`)
    // Within seconds of the save: the clocks say little yet (the next test waits for that).
    for (const vm of booted) expect(Math.abs(vm.skew)).toBeLessThan(10)
    for (const vm of booted) expect(processExists(vm.pid)).toBe(false)
    expect(committed()).toEqual([...ids])

    // Nothing a lease is given is in the template: it was saved before provisioning.
    const dir = join(templates, [...ids][0]!)
    const grep = (needle: string, file: string, decompress: boolean) =>
      Number(
        execFileSync('sh', ['-c', `${decompress ? 'zstd -dc "$2"' : 'cat "$2"'} | grep -a -F -c -e "$1" || true`, 'sh', needle, file], {
          encoding: 'utf8',
          maxBuffer: 1 << 20,
        }).trim(),
      )
    for (const needle of [secret, ...booted.map((vm) => vm.publicKey), ...booted.map((vm) => vm.token!)]) {
      expect(grep(needle, join(dir, 'state.zst'), true), `${needle.slice(0, 24)}… in the saved RAM`).toBe(0)
      expect(grep(needle, join(dir, 'disk.qcow2'), false), `${needle.slice(0, 24)}… on the saved disk`).toBe(0)
    }
    // The same search finds what the guest had at save time: the needle check can fail.
    expect(grep('stereosd', join(dir, 'state.zst'), true)).toBeGreaterThan(0)

    const ls = execFileSync(process.execPath, [join(repoRoot, 'packages', 'harness', 'dist', 'cli', 'main.js'), 'ls', '--templates', '--json'], {
      env: { ...process.env, STEREOS_HARNESS_CACHE: cache },
      encoding: 'utf8',
    })
    expect(JSON.parse(ls)).toEqual([expect.objectContaining({ id: [...ids][0], agent: true, stale: false })])
  }, 480_000)

  test('VMs restored from a template saved a while ago run on the host clock, not the template clock (agent in the template, and agentd)', async () => {
    const previous = process.env.STEREOS_HARNESS_CACHE
    process.env.STEREOS_HARNESS_CACHE = cache
    try {
      // agentd runs the agent as `agent`, so its leases get a template of their own, without one.
      {
        await using first = await Sandbox.boot({ arch: 'x86_64', runtimeDir: runtime, bootstrap: 'agentd' })
        expect(first.info.template).toMatchObject({ agent: false })
      }
      const saved = Math.max(...committed().map((id) => Date.parse(JSON.parse(readFileSync(join(templates, id, 'template.json'), 'utf8')).created)))
      // Make both templates at least 30 s old: a guest left on its saved clock would be that far behind.
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, saved + 30_000 - Date.now())))
      for (const bootstrap of ['ssh', 'agentd'] as const) {
        await using sandbox = await Sandbox.boot({ arch: 'x86_64', runtimeDir: runtime, bootstrap })
        expect(sandbox.info.template).toMatchObject({ built: false, agent: bootstrap === 'ssh' })
        const skew = Number((await sandbox.exec('date', ['-u', '+%s'])).stdout) - Date.now() / 1000
        expect(Math.abs(skew), `${bootstrap}: guest clock ${skew.toFixed(1)} s off`).toBeLessThan(5)
      }
    } finally {
      if (previous === undefined) delete process.env.STEREOS_HARNESS_CACHE
      else process.env.STEREOS_HARNESS_CACHE = previous
    }
  }, 300_000)

  test('a damaged template is removed with one log line and the VM boots cold; prune clears the dead save', async () => {
    // The agentd template (this boot's kind): the one without the agent in it.
    const id = committed().find((t) => JSON.parse(readFileSync(join(templates, t, 'template.json'), 'utf8')).agent === false)
    const state = join(templates, id!, 'state.zst')
    // Damage the middle of the stream (same size): zstd fails its checksum, QEMU cannot load it.
    const fd = openSync(state, 'r+')
    writeSync(fd, randomBytes(64 * 1024), 0, 64 * 1024, Math.floor(statSync(state).size / 2))
    closeSync(fd)
    const lines: string[] = []
    const previous = process.env.STEREOS_HARNESS_CACHE
    process.env.STEREOS_HARNESS_CACHE = cache
    let sandbox: Sandbox | undefined
    try {
      sandbox = await Sandbox.boot({ arch: 'x86_64', runtimeDir: runtime, template: 'auto' }, { log: (line) => lines.push(line) })
      expect(sandbox.info.template).toBeUndefined()
      expect((await sandbox.exec('echo', ['cold and well'])).stdout).toBe('cold and well\n')
    } finally {
      await sandbox?.shutdown()
      if (previous === undefined) delete process.env.STEREOS_HARNESS_CACHE
      else process.env.STEREOS_HARNESS_CACHE = previous
    }
    expect(lines.filter((line) => /template/.test(line))).toEqual([
      expect.stringMatching(new RegExp(`^VM template ${id} could not be restored \\(.+\\); it is removed, and this VM boots cold$`)),
    ])
    expect(committed()).not.toContain(id)
    expect(committed()).toHaveLength(1)

    const prune = execFileSync(process.execPath, [join(repoRoot, 'packages', 'harness', 'dist', 'cli', 'main.js'), 'prune', '--json'], {
      env: { ...process.env, STEREOS_HARNESS_CACHE: cache, MB_CONFIG_DIR: join(cache, 'mb') },
      encoding: 'utf8',
    })
    expect(JSON.parse(prune).templates.staging).toHaveLength(1)
    expect(staging()).toEqual([])
  }, 240_000)
})
