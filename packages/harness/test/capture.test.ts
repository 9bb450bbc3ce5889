import { execFileSync, spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { afterAll, describe, expect, test } from 'vitest'
import { readMember, readMembers, writeContainer } from '../src/capture/container.js'
import { CAPTURE_FORMAT, CaptureManifest, MANIFEST_MEMBER } from '../src/capture/manifest.js'
import { extractCapture, openCapture, restoreRefusal } from '../src/capture/open.js'
import { needleBytes, redact, streamHolds } from '../src/capture/scan.js'
import { scrubLauncher, scrubScript } from '../src/capture/scrub.js'

const dir = mkdtempSync(join(tmpdir(), 'capture-unit-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))
const sha = (b: Buffer) => execFileSync('sha256sum', { input: b }).toString().split(' ')[0] as string

function manifest(over: Partial<CaptureManifest> = {}, files: CaptureManifest['files'] = {}): CaptureManifest {
  return {
    format: CAPTURE_FORMAT,
    harness: { version: '0.1.0' },
    created: '2026-01-01T00:00:00.000Z',
    arch: 'x86_64',
    accel: 'tcg',
    machine: { qemu: 'QEMU emulator version 7.2.0', type: 'q35', cpu: 'max', cpus: 1, memoryMiB: 512, diskBytes: 4 * 1024 ** 3 },
    mixtape: { ref: 'fixture', disk: { file: 'stereos.img', format: 'raw', sha256: 'a'.repeat(64), bytes: 1 } },
    vm: { controlPlane: 'tcp', network: 'nat', bootstrap: 'agentd', shareImage: false },
    shares: [],
    ram: { included: true },
    disk: { included: true },
    files,
    context: { file: 'math.test.ts', failedTests: ['adds'] },
    timings: { scrubMs: 1, saveMs: 1, totalMs: 2 },
    ...over,
  }
}

async function container(name: string, m: unknown, members: { name: string; data: Buffer }[] = []): Promise<string> {
  const path = join(dir, name)
  await writeContainer(path, [{ name: MANIFEST_MEMBER, data: Buffer.from(JSON.stringify(m)) }, ...members])
  return path
}

describe('capture container', () => {
  test('members round-trip in order, with sizes that are not block multiples, and tar reads the file', async () => {
    const big = Buffer.alloc(70_000, 7)
    const file = join(dir, 'member.bin')
    writeFileSync(file, big)
    const path = join(dir, 'rt.stcap')
    await writeContainer(path, [
      { name: 'a.txt', data: Buffer.from('hello') },
      { name: 'empty', data: Buffer.alloc(0) },
      { name: 'big.bin', file },
    ])
    const members = readMembers(path)
    expect(members.map((m) => [m.name, m.size])).toEqual([
      ['a.txt', 5],
      ['empty', 0],
      ['big.bin', 70_000],
    ])
    expect(readMember(path, members[2]!, 1e6).equals(big)).toBe(true)
    expect(execFileSync('tar', ['-tf', path]).toString().trim().split('\n')).toEqual(['a.txt', 'empty', 'big.bin'])
  })

  test('a truncated container is refused with one clear error', async () => {
    const path = join(dir, 'cut.stcap')
    await writeContainer(path, [{ name: 'x', data: Buffer.alloc(5000, 1) }])
    truncateSync(path, 3000)
    expect(() => readMembers(path)).toThrow(/not a readable capture: x needs 5000 bytes/)
  })

  test('a member name with a path is refused by the writer', async () => {
    await expect(writeContainer(join(dir, 'bad.stcap'), [{ name: '../x', data: Buffer.alloc(1) }])).rejects.toThrow(/bad member name/)
  })
})

describe('capture manifest and refusals', () => {
  test('the schema accepts a manifest and refuses one without the mixtape digest', () => {
    expect(CaptureManifest.safeParse(manifest()).success).toBe(true)
    const broken = manifest()
    ;(broken.mixtape.disk as { sha256: string }).sha256 = 'nope'
    expect(CaptureManifest.safeParse(broken).success).toBe(false)
  })

  test('another format names who made it, in one line', async () => {
    const path = await container('old.stcap', { format: 99, harness: { version: '9.9.9' } })
    expect(() => openCapture(path)).toThrow(/is capture format 99 \(harness 9\.9\.9\); this harness \(.*\) restores format 1\nFix: .*--extract DIR/)
  })

  test('a KVM capture from another arch, and one without RAM, say why they cannot be restored', async () => {
    const kvm = openCapture(await container('kvm.stcap', manifest({ accel: 'kvm', arch: 'aarch64' })))
    expect(restoreRefusal(kvm, 'x86_64')).toMatch(/taken under KVM on aarch64; this host is x86_64/)
    expect(restoreRefusal(kvm, 'aarch64')).toBeUndefined()
    const noRam = openCapture(await container('noram.stcap', manifest({ ram: { included: false, reason: 'the saved RAM still holds a secret value' } })))
    expect(restoreRefusal(noRam, 'x86_64')).toMatch(/holds no RAM \(the saved RAM still holds a secret value\)/)
  })

  test('members are checked against the manifest: an unlisted or altered one is refused', async () => {
    const log = Buffer.from('console line\n')
    const good = await container('good.stcap', manifest({}, { 'serial.log': { bytes: log.length, sha256: sha(log) } }), [{ name: 'serial.log', data: log }])
    const out = await extractCapture(openCapture(good), join(dir, 'x1'))
    expect(readFileSync(join(dir, 'x1', 'serial.log'), 'utf8')).toBe('console line\n')
    expect(out.files).toHaveLength(2)
    const other = Buffer.from('console LINE\n')
    const altered = await container('alt.stcap', manifest({}, { 'serial.log': { bytes: log.length, sha256: sha(log) } }), [{ name: 'serial.log', data: other }])
    await expect(extractCapture(openCapture(altered), join(dir, 'x2'))).rejects.toThrow(/serial\.log does not match its sha256/)
    const unlisted = await container('unl.stcap', manifest(), [{ name: 'serial.log', data: log }])
    expect(() => openCapture(unlisted)).toThrow(/serial\.log is not the member its manifest lists/)
  })
})

describe('secret scan', () => {
  test('finds a value split across chunks, in UTF-8 and UTF-16LE; ignores short values', async () => {
    const token = 'f'.repeat(10) + '0123456789abcdef'
    const needles = needleBytes([
      { what: 'the token', value: token },
      { what: 'a short one', value: 'short' },
    ])
    expect(needles).toHaveLength(2)
    const text = Buffer.from(`xx${token}yy`)
    const chunks = [text.subarray(0, 9), text.subarray(9)]
    expect(await streamHolds(Readable.from(chunks), needles)).toBe('the token')
    // Chunks shorter than a value: it spans several boundaries.
    const small = Buffer.from(`${'x'.repeat(40)}${token}`)
    const bits = Array.from({ length: Math.ceil(small.length / 3) }, (_, i) => small.subarray(i * 3, i * 3 + 3))
    expect(await streamHolds(Readable.from(bits), needles)).toBe('the token')
    expect(await streamHolds(Readable.from(bits.slice(0, -1)), needles)).toBeUndefined()
    expect(await streamHolds(Readable.from([Buffer.from(`..${token}..`, 'utf16le')]), needles)).toBe('the token (UTF-16)')
    expect(await streamHolds(Readable.from([Buffer.from('nothing here')]), needles)).toBeUndefined()
    expect(redact(Buffer.from(`a ${token} b`), [{ what: 't', value: token }]).toString()).toBe('a [redacted] b')
  })

  test('the scrub script kills the agent by its main.js path, and its own text does not match that pattern', () => {
    const script = scrubScript()
    expect(script).toContain('/opt/stereos-harness/lib/agent/main.js')
    expect(script).toContain('/run/stereos/secrets/*')
    expect(script).toMatch(/authorized_keys/)
    // sh -n: the script, and the launcher that installs it, parse.
    execFileSync('sh', ['-n'], { input: script })
    execFileSync('sh', ['-n'], { input: scrubLauncher() })
  })

  test('the scrub stops stereosd and agentd before zeroing free memory and starts them after', () => {
    const script = scrubScript()
    const fill = script.indexOf('mount -t tmpfs')
    expect(script.indexOf('systemctl stop stereosd.service agentd.service')).toBeLessThan(fill)
    expect(script.indexOf('kill -9 $pid')).toBeLessThan(fill)
    expect(script.indexOf('systemctl start --no-block stereosd.service agentd.service')).toBeGreaterThan(fill)
    expect(script.indexOf('exec ${restart_stereosd}')).toBeGreaterThan(fill)
  })

  test('the launcher hands the scrub its SSH session: its own shell and ancestors below a daemon of init', () => {
    const walk = scrubLauncher()
      .split('\n')
      .find((line) => line.startsWith('session='))
    // Run here: this test's shell, then its ancestors (vitest's worker, …), never pid 1's children.
    const session = execFileSync('sh', ['-c', `${walk}\necho $session $$`])
      .toString()
      .trim()
      .split(/\s+/)
      .map(Number)
    const shell = session.pop()
    expect(session[0]).toBe(shell)
    expect(session).toContain(process.pid)
    expect(session).not.toContain(1)
  })

  test("the scrub finds a daemon by its program's name, not by an argument that names it", async () => {
    const fake = join(dir, 'stereosd.mjs')
    writeFileSync(fake, 'setTimeout(() => {}, 60_000)\n')
    const daemon = spawn(process.execPath, [fake, 'run'], { stdio: 'ignore' })
    const bystander = spawn('sh', ['-c', 'sleep 60', 'stereosd'], { stdio: 'ignore' })
    try {
      await new Promise((done) => daemon.once('spawn', done))
      // The function as the script defines it, with node as the program's name (not a path to it).
      const define = scrubScript()
        .split('\n')
        .find((line) => line.startsWith('daemon_pids()'))
      const found = execFileSync('sh', ['-c', `${define}\ndaemon_pids stereosd`])
        .toString()
        .trim()
        .split('\n')
      expect(found).toEqual([String(daemon.pid)])
    } finally {
      daemon.kill('SIGKILL')
      bystander.kill('SIGKILL')
    }
  })
})
