import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync } from 'node:fs'
import { homedir, tmpdir } from 'node:os'
import { join } from 'node:path'
import { Sandbox } from '@stereos/harness'
import { afterAll, expect, test } from 'vitest'
import { repoRoot, runCommand, runtimeDir, vmDirs } from './support.js'

/**
 * A running VM captured (Sandbox.capture) with a secret, then read on a "second machine" (another
 * runtime dir and harness cache): the secret, the agent token and the SSH keys given to the VM
 * are in no byte of the capture (every member decompressed, the saved RAM too), and `debug
 * --exec` restores it there: the file the guest wrote before the capture is there, the service it
 * started outside any share still answers, and the command's exit status is debug's. On x86_64
 * and on aarch64 (under TCG on an x86_64 host).
 */
const realCache = process.env.STEREOS_HARNESS_CACHE ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'stereos-harness')
const work = mkdtempSync(join(tmpdir(), 'sh-capture-'))
const secret = `cap-secret-${randomBytes(8).toString('hex')}`
afterAll(() => rmSync(work, { recursive: true, force: true }))

/** A second machine's cache: the harness share and guest Node linked (building them is not what is tested), no templates. */
function secondCache(dir: string): string {
  const cache = join(dir, 'cache-b')
  mkdirSync(cache)
  for (const name of ['share', 'guest-node']) symlinkSync(join(realCache, name), join(cache, name))
  return cache
}

const SERVICE = `require('net').createServer((s) => s.end('pong from the captured guest\\n')).listen(7777, '127.0.0.1')`
const CLIENT = `require('net').connect(7777, '127.0.0.1').on('data', (d) => process.stdout.write(d)).on('error', (e) => { console.log('no service: ' + e.code); process.exitCode = 1 })`

interface CaseOptions {
  arch: 'x86_64' | 'aarch64'
  timeoutMs: number
}

/** Boot with a secret, write a file and start a service as root, capture; check every member; restore with `debug --exec` on a second machine. */
async function captureAndRestore({ arch, timeoutMs }: CaseOptions): Promise<void> {
  const dir = join(work, arch)
  mkdirSync(dir)
  const capture = join(dir, 'failed.stcap')
  const sandbox = await Sandbox.boot({
    arch,
    runtimeDir: runtimeDir(),
    bootstrap: 'ssh',
    secrets: { CAP_SECRET: secret },
    bootTimeoutMs: timeoutMs,
    agentTimeoutMs: timeoutMs,
  })
  let token: string
  let publicKey: string
  let privateLine: string
  try {
    // The agent started over SSH runs as root: it can show what the VM was given.
    token = (await sandbox.exec('cat', ['/run/stereos/secrets/STEREOS_HARNESS_TOKEN'], { user: 'root' })).stdout.trim()
    expect(token).toMatch(/^[0-9a-f]{64}$/)
    expect((await sandbox.exec('cat', ['/run/stereos/secrets/CAP_SECRET'], { user: 'root' })).stdout).toBe(secret)
    publicKey = readFileSync(`${sandbox.ssh!.keyPath}.pub`, 'utf8').split(' ')[1]!
    privateLine = readFileSync(sandbox.ssh!.keyPath, 'utf8').split('\n')[1]!
    await sandbox.exec('sh', ['-c', 'echo written before the failure > /root/capture-proof && sync'], { user: 'root' })
    await sandbox.exec('sh', ['-c', `setsid node -e "${SERVICE}" </dev/null >/dev/null 2>&1 &`], { user: 'root' })
    await expect.poll(async () => (await sandbox.exec('node', ['-e', CLIENT])).stdout, { timeout: 20_000 }).toContain('pong')

    const report = await sandbox.capture(capture, { context: { file: 'capture.test.ts', failedTests: ['the service answers'] } })
    process.stderr.write(`capture (${arch}): ${(report.bytes / 1e6).toFixed(1)} MB, ${JSON.stringify(report.timings)}, ram ${report.ram.included}\n`)
    expect(report.ram).toEqual({ included: true })
    expect(report.disk).toEqual({ included: true })
    // The captured VM has no agent any more, and QEMU ended with the capture.
    await expect(sandbox.exec('true')).rejects.toThrow(/was captured/)
    expect((await sandbox.exited).code).toBe(0)
    expect((await sandbox.shutdown()).stoppedBy).toBe('already-exited')
  } finally {
    await sandbox.shutdown()
  }

  // Every member, decompressed: no secret value, token or key material.
  const cli = join(repoRoot, 'packages', 'harness', 'dist', 'cli', 'main.js')
  const extracted = join(dir, 'extracted')
  const extract = await runCommand(process.execPath, [cli, 'debug', capture, '--extract', extracted], { cwd: repoRoot, env: process.env })
  expect(extract.code, extract.output).toBe(0)
  expect(readdirSync(extracted).sort()).toEqual(['disk.qcow2', 'manifest.json', 'qemu.log', 'serial.log', 'state.zst'])
  for (const file of readdirSync(extracted)) {
    for (const needle of [secret, token, publicKey, privateLine]) expect(count(needle, join(extracted, file)), `${needle.slice(0, 16)}… in ${file}`).toBe(0)
  }
  // The check can fail: the disk does hold what the guest wrote.
  expect(count('written before the failure', join(extracted, 'disk.qcow2'))).toBeGreaterThan(0)
  const manifest = JSON.parse(readFileSync(join(extracted, 'manifest.json'), 'utf8'))
  expect(manifest.context).toEqual({ file: 'capture.test.ts', failedTests: ['the service answers'] })
  expect(manifest.mixtape.disk.sha256).toMatch(/^[0-9a-f]{64}$/)
  expect(manifest.arch).toBe(arch)

  // A second machine: another runtime dir and cache. The restored VM still has the file and the service.
  const runtimeB = join(dir, 'runtime-b')
  const env = { ...process.env, STEREOS_RUNTIME_DIR: runtimeB, STEREOS_HARNESS_CACHE: secondCache(dir) }
  const command = `sudo -n cat /root/capture-proof; uname -m; node -e "${CLIENT}"; exit 3`
  const debug = await runCommand(process.execPath, [cli, 'debug', capture, '--exec', command], { cwd: repoRoot, env })
  expect(debug.output).toContain('written before the failure')
  expect(debug.output).toContain(`${arch}\n`)
  expect(debug.output).toContain('pong from the captured guest')
  expect(debug.code, debug.output).toBe(3)
  expect(vmDirs(runtimeB)).toEqual([])
}

/** How many lines of `file` (zstd decompressed) hold `needle`. */
function count(needle: string, file: string): number {
  return Number(
    execFileSync('sh', ['-c', `${file.endsWith('.zst') ? 'zstd -dc "$2"' : 'cat "$2"'} | grep -a -F -c -e "$1" || true`, 'sh', needle, file], {
      maxBuffer: 1024 ** 2,
    })
      .toString()
      .trim(),
  )
}

test('an x86_64 capture holds no secret, token or key, and debug --exec restores it on a second machine', { timeout: 600_000 }, () =>
  captureAndRestore({ arch: 'x86_64', timeoutMs: 120_000 }),
)

// aarch64 under TCG on an x86_64 host, the same case: the virt machine's RAM and devices (GIC,
// timer) are saved and restored as x86_64's are; `uname -m` shows which guest came back.
test('an aarch64 capture holds no secret, token or key, and debug --exec restores it', { timeout: 900_000 }, () =>
  captureAndRestore({ arch: 'aarch64', timeoutMs: 240_000 }),
)
