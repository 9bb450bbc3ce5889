import { spawn } from 'node:child_process'
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { gunzipSync } from 'node:zlib'
import { afterAll, describe, expect, test } from 'vitest'
import { processExists, repoRoot, runtimeDir, vitestCli } from './support.js'
import type { CommandResult } from './support.js'

const VITEST = join(repoRoot, 'node_modules', 'vitest', 'vitest.mjs')

interface JsonReport {
  numPassedTests: number
  numFailedTests: number
  numPendingTests: number
  testResults: { name: string; status: string; assertionResults: { fullName: string; status: string; meta: Record<string, unknown> }[] }[]
}

/** A copy of an example project inside the repo (the guest sees the repo through the project view). */
function projectCopy(name: string): string {
  const dir = join(repoRoot, 'fixtures', 'projects', `.run-${name}-${process.pid}-${Date.now()}`)
  cpSync(join(repoRoot, 'fixtures', 'projects', name), dir, { recursive: true })
  return dir
}

/** The real vitest CLI, as a user runs it; never throws on test failures (exit code 1). */
function vitest(cwd: string, args: string[], env: Record<string, string> = {}): Promise<{ code: number; output: string }> {
  return vitestAt(VITEST, cwd, args, env)
}

function vitestAt(cli: string, cwd: string, args: string[], env: Record<string, string> = {}): Promise<CommandResult> {
  return vitestCli(cwd, ['run', ...args], env, cli)
}

/** fixtures/projects/vitest4's own Vitest 4.1 (scripts/setup.mjs installs it). */
function vitest4(cwd: string, args: string[]): Promise<{ code: number; output: string }> {
  return vitestAt(join(cwd, 'node_modules', 'vitest', 'vitest.mjs'), cwd, args)
}

describe('vitest --pool=stereos (real vitest CLI, fixture VMs)', () => {
  const copies: string[] = []
  const reports = mkdtempSync(join(tmpdir(), 'sh-vitest-'))
  afterAll(() => {
    for (const dir of copies) rmSync(dir, { recursive: true, force: true })
    rmSync(reports, { recursive: true, force: true })
  })

  test('features project: counts, console attribution, vi.mock, setupFiles, test.extend, describe.sandbox routing, VM logs on the failed test', async () => {
    const dir = projectCopy('features')
    copies.push(dir)
    const json = join(reports, 'features.json')
    const junit = join(reports, 'features.xml')
    // --update: in CI (CI=true) Vitest writes no new snapshots otherwise.
    const { code, output } = await vitest(dir, [
      '--pool=stereos',
      '--update',
      '--reporter=default',
      '--reporter=json',
      '--reporter=junit',
      '--reporter=html',
      `--outputFile.json=${json}`,
      `--outputFile.junit=${junit}`,
    ])
    expect(code).toBe(1)
    const report = JSON.parse(readFileSync(json, 'utf8')) as JsonReport
    expect({ passed: report.numPassedTests, failed: report.numFailedTests, skipped: report.numPendingTests }).toEqual({ passed: 7, failed: 1, skipped: 1 })
    const results = Object.fromEntries(report.testResults.flatMap((file) => file.assertionResults.map((a) => [a.fullName, a])))
    expect(results['fails on purpose']?.status).toBe('failed')
    expect(results['vi.mock replaces a module']?.status).toBe('passed')
    expect(results['setupFiles ran in this guest']?.status).toBe('passed')
    expect(results['passes, with a fixture from test.extend']?.status).toBe('passed')
    const sandboxed = results['a suite that needs more memory runs in a VM with that much memory']
    expect(sandboxed?.status).toBe('passed')
    expect(sandboxed?.meta).toEqual({ stereos: { resources: { memory: '768MiB' }, sandbox: true } })
    // Console output reaches the reporter attributed to its test.
    expect(output).toMatch(/stdout \| tests\/basics\.test\.ts(:\d+)? > logs to the console\s+console line from the guest/)
    expect(output).toMatch(/stderr \| tests\/basics\.test\.ts(:\d+)? > logs to the console\s+stderr line from the guest/)
    // The failed test carries what the guest printed while its file ran: in the default reporter and as junit properties.
    expect(output).toMatch(
      /❯ stereos\s+↳ VM vm-\S+ \(x86_64, \w+, fixture\): what the guest printed while this file ran[\s\S]*↳ VM vm-\S+ boot timeline: .*agent-ready/,
    )
    const xml = readFileSync(junit, 'utf8')
    expect(xml).toMatch(/<property name="stereos" value="VM vm-\S+ \([^)]*\): what the guest printed while this file ran/)
    // The HTML report (@vitest/ui) carries the annotations, the excerpt inline (a body, not a host path).
    const html = gunzipSync(readFileSync(join(dir, '.vitest', 'ui', 'html.meta.json.gz'))).toString()
    expect(html).toMatch(/what the guest printed while this file ran/)
    const bodies = [...html.matchAll(/"([A-Za-z0-9+/]{200,}={0,2})"/g)].map((m) => Buffer.from(m[1] as string, 'base64').toString('utf8'))
    expect(bodies.some((text) => /^VM vm-\S+ .*: what the guest printed while .*basics\.test\.ts/.test(text))).toBe(true)
    // Snapshots were created on the host through the pool's snapshot channel (guest writes stay in the VM).
    const snap = readFileSync(join(dir, 'tests', '__snapshots__', 'snapshot.test.ts.snap'), 'utf8')
    expect(snap).toContain('"value": "first"')

    // Same snapshots, a changed value: the fixed one matches, the changed one fails...
    const mismatch = await vitest(dir, ['tests/snapshot.test.ts', '--pool=stereos'], { SNAPSHOT_VALUE: 'second' })
    expect(mismatch.code).toBe(1)
    expect(mismatch.output).toMatch(/Snapshot `a snapshot of a value the run chooses 1` mismatched/)
    expect(mismatch.output).toMatch(/Tests\s+1 failed \| 1 passed/)
    // ...and --update writes the new value into the host's .snap file.
    const update = await vitest(dir, ['tests/snapshot.test.ts', '--pool=stereos', '--update'], { SNAPSHOT_VALUE: 'second' })
    expect(update.code).toBe(0)
    expect(update.output).toMatch(/Snapshots\s+1 updated/)
    expect(readFileSync(join(dir, 'tests', '__snapshots__', 'snapshot.test.ts.snap'), 'utf8')).toContain('"value": "second"')
  }, 900_000)

  test('basic project: 4 files on 2 workers boot 2 VMs, not 4', async () => {
    const { code, output } = await vitest(join(repoRoot, 'fixtures', 'projects', 'basic'), ['--pool=stereos'])
    expect(code).toBe(0)
    expect(output).toMatch(/Test Files\s+4 passed/)
    expect(output).toContain('4 test file(s) ran in 2 VM boot(s)')
  }, 600_000)

  test('under another pool, describe.sandbox suites are skipped with the reason, the rest runs', async () => {
    const dir = join(repoRoot, 'fixtures', 'projects', 'basic')
    const json = join(reports, 'forks.json')
    const { code } = await vitest(dir, ['--pool=forks', '--reporter=json', `--outputFile=${json}`])
    expect(code).toBe(0)
    const report = JSON.parse(readFileSync(json, 'utf8')) as JsonReport
    const names = report.testResults.flatMap((f) => f.assertionResults.map((a) => `${a.status}: ${a.fullName}`))
    expect(names).toContain('passed: arithmetic adds')
    expect(names.find((n) => n.includes('inside a stereOS VM'))).toMatch(/^skipped: .*run with `vitest --pool=stereos`/)
  }, 120_000)

  test('QEMU killed by PID mid-file: that file fails with the VM logs, the run goes on in a fresh VM', async () => {
    const runtime = runtimeDir()
    const child = spawn(process.execPath, [VITEST, 'run', '--pool=stereos'], {
      cwd: join(repoRoot, 'fixtures', 'projects', 'crash'),
      env: { ...process.env, STEREOS_RUNTIME_DIR: runtime, NO_COLOR: '1' },
    })
    let output = ''
    let killed: number | undefined
    const onData = (chunk: Buffer) => {
      output += chunk.toString()
      if (killed === undefined && output.includes('slow test started')) {
        killed = qemuPids(runtime)[0] ?? 0
        if (killed) process.kill(killed, 'SIGKILL')
      }
    }
    child.stdout.on('data', onData)
    child.stderr.on('data', onData)
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve))
    expect(killed).toBeGreaterThan(0)
    expect(code).toBe(1)
    expect(output).toMatch(/the VM's QEMU \(pid \d+\) exited while running a test file in VM vm-\S+\. Last lines of its console:/)
    expect(output).toMatch(/serial\.log/)
    expect(output).toMatch(/✓ b-quick\.test\.ts/)
    expect(output).toContain('2 test file(s) ran in 2 VM boot(s)')
  }, 600_000)

  test("inline projects: test.pool 'stereos' in config works without the CLI flag, isolation 'vm' gives each file a fresh VM, other projects stay on the host", async () => {
    const json = join(reports, 'projects.json')
    const { code, output } = await vitest(join(repoRoot, 'fixtures', 'projects', 'projects'), [
      '--reporter=default',
      '--reporter=json',
      `--outputFile.json=${json}`,
    ])
    expect(code).toBe(0)
    const report = JSON.parse(readFileSync(json, 'utf8')) as JsonReport
    expect(report.numPassedTests).toBe(3)
    expect(output).toContain('2 test file(s) ran in 2 VM boot(s)')
  }, 600_000)

  test("a test that hangs is ended by Vitest's testTimeout in the guest, carries the VM logs, and the run goes on; a guest-only attachment reaches the host", async () => {
    const dir = join(repoRoot, 'fixtures', 'projects', 'hang')
    const attachments = join(dir, '.vitest', 'attachments')
    rmSync(join(dir, '.vitest'), { recursive: true, force: true })
    const { code, output } = await vitest(dir, ['--pool=stereos'])
    const copied = existsSync(attachments)
      ? readdirSync(attachments, { withFileTypes: true })
          .filter((f) => f.isFile())
          .map((f) => readFileSync(join(attachments, f.name), 'utf8'))
      : []
    rmSync(join(dir, '.vitest'), { recursive: true, force: true })
    // The file existed only in the guest: the pool read it through the agent and sent its bytes.
    expect(copied).toContain('made in the guest\n')
    expect(code).toBe(1)
    expect(output).toMatch(/FAIL\s+a-hangs\.test\.ts(:\d+)? > never settles\s+TestTimeoutError: Test timed out in 3000ms/)
    expect(output).toMatch(/❯ stereos\s+↳ VM vm-\S+ \([^)]*\): what the guest printed while this file ran/)
    expect(output).toMatch(/✓ b-after\.test\.ts/)
    expect(output).toMatch(/Tests\s+1 failed \| 1 passed/)
  }, 600_000)

  test('Vitest 4.1 (installed from packed tarballs, as a user installs it): the same pool, worker, snapshots and VM logs', async () => {
    const dir = join(repoRoot, 'fixtures', 'projects', 'vitest4')
    rmSync(join(dir, '__snapshots__'), { recursive: true, force: true })
    const json = join(reports, 'vitest4.json')
    const { code, output } = await vitest4(dir, ['--pool=stereos', '--update', '--reporter=default', '--reporter=json', `--outputFile.json=${json}`])
    rmSync(join(dir, '__snapshots__'), { recursive: true, force: true })
    expect(code).toBe(1)
    expect(output).toMatch(/RUN\s+v4\.1\.\d+/)
    const report = JSON.parse(readFileSync(json, 'utf8')) as JsonReport
    expect({ passed: report.numPassedTests, failed: report.numFailedTests }).toEqual({ passed: 2, failed: 1 })
    expect(output).toMatch(/stdout \| guest\.test\.ts(:\d+)? > Vitest 4\.1 in a stereOS VM > runs in the guest\s+hello from Vitest 4 in the guest/)
    expect(output).toMatch(/Snapshots\s+1 written/)
    expect(output).toMatch(/❯ stereos\s+↳ VM vm-\S+ \([^)]*\): what the guest printed while this file ran/)
    expect(output).not.toMatch(/Timeout terminating stereos worker/)
  }, 600_000)

  for (const signal of ['SIGINT', 'SIGKILL'] as const) {
    test(`${signal} to vitest leaves no QEMU behind`, async () => {
      const runtime = runtimeDir()
      const child = spawn(process.execPath, [VITEST, 'run', '--pool=stereos'], {
        cwd: join(repoRoot, 'fixtures', 'projects', 'crash'),
        env: { ...process.env, STEREOS_RUNTIME_DIR: runtime },
        stdio: ['ignore', 'pipe', 'pipe'],
      })
      let output = ''
      const started = new Promise<void>((resolve) => {
        const onData = (chunk: Buffer) => {
          output += chunk.toString()
          if (output.includes('slow test started')) resolve()
        }
        child.stdout.on('data', onData)
        child.stderr.on('data', onData)
      })
      const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()))
      await started
      const pids = qemuPids(runtime)
      expect(pids.length).toBeGreaterThan(0)
      child.kill(signal)
      await exited
      const deadline = Date.now() + 30_000
      while (pids.some(processExists) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 250))
      expect(pids.filter(processExists)).toEqual([])
    }, 600_000)
  }
})

/** PIDs of the QEMUs whose VM dirs are in `runtime` (qemu.pid, as QEMU writes it). */
function qemuPids(runtime: string): number[] {
  const vms = join(runtime, 'vms')
  if (!existsSync(vms)) return []
  return readdirSync(vms)
    .map((id) => join(vms, id, 'qemu.pid'))
    .filter((file) => existsSync(file))
    .map((file) => Number(readFileSync(file, 'utf8').trim()))
}
