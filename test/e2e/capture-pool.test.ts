import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs'
import { homedir, tmpdir } from 'node:os'
import { join, relative } from 'node:path'
import { afterAll, expect, test } from 'vitest'
import { repoRoot, runCommand, vitestCli, vmDirs } from './support.js'

/**
 * #22 end to end, the way CI meets it: a project whose one test file fails runs under the pool in
 * CI mode with `capture: 'on-failure'` and leaves exactly one capture beside its reports, named in
 * the JSON and JUnit reports and the terminal. On a "second machine" (another runtime dir and
 * harness cache, the checkout copied to another path) `debug --exec` reopens it: the file the
 * test wrote before failing and the service it started in the guest (outside the view) are
 * there, the local checkout is laid at the CI path under the VM's writes, and `debug --rerun`
 * fails the same test again under Vitest in that VM. The secret given to the VM is in no member.
 */
const realCache = process.env.STEREOS_HARNESS_CACHE ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'stereos-harness')
const dirs: string[] = []
afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true })
})

const config = (mixtape: string, secret: string) => `import { stereos } from '@stereos/vitest-plugin'
import { defineConfig } from 'vitest/config'

export default defineConfig({
  plugins: [stereos({ mixtape: '${mixtape}', capture: 'on-failure', secrets: { CAP_SECRET: ${JSON.stringify(secret)} } })],
  test: { include: ['test/*.test.ts'], maxWorkers: 1 },
})
`

const TEST = `import { spawn } from 'node:child_process'
import { connect } from 'node:net'
import { writeFileSync } from 'node:fs'
import { expect, test } from 'vitest'

const SERVICE = "require('net').createServer((s) => s.end('pong from the failed test\\\\n')).listen(7788, '127.0.0.1')"
const answers = () => new Promise((resolve) => connect(7788, '127.0.0.1').on('data', () => resolve(true)).on('error', () => resolve(false)))

test('the widget renders', async () => {
  writeFileSync('written-before-failure.txt', 'the test wrote this before failing\\n')
  spawn(process.execPath, ['-e', SERVICE], { cwd: '/', detached: true, stdio: 'ignore' }).unref()
  // A leftover in the project: it keeps the view mounted, so the capture must stop it.
  spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { detached: true, stdio: 'ignore' }).unref()
  await expect.poll(answers, { timeout: 20_000 }).toBe(true)
  expect('rendered').toBe('the widget')
})
`

// The fixture guest, and its variant laid out as stereOS's NixOS (systemd units, no /usr/bin tools).
test.each(['fixture', 'fixture-nixos'])(
  '%s: a failing file in CI leaves one capture; another machine reopens it, sees its state and reruns the failing test',
  { timeout: 900_000 },
  async (mixtape) => {
    const work = mkdtempSync(join(tmpdir(), 'sh-capture-pool-'))
    const project = join(repoRoot, 'fixtures', 'projects', `.run-capture-${process.pid}-${Date.now()}`)
    const secret = `pool-cap-secret-${randomBytes(8).toString('hex')}`
    dirs.push(work, project)
    mkdirSync(join(project, 'test'), { recursive: true })
    writeFileSync(join(project, 'vitest.config.ts'), config(mixtape, secret))
    writeFileSync(join(project, 'test', 'widget.test.ts'), TEST)
    const reports = join(project, 'reports')
    const run = await vitestCli(
      project,
      [
        'run',
        '--pool=stereos',
        '--reporter=default',
        '--reporter=json',
        '--reporter=junit',
        '--outputFile.json=reports/r.json',
        '--outputFile.junit=reports/junit.xml',
      ],
      // Beside the reports: not where a CI job's setup-stereos sends the captures of its own run.
      { CI: '1', STEREOS_CAPTURE_DIR: '' },
    )
    expect(run.code, run.output).toBe(1)
    for (const line of run.output.split('\n')) if (line.includes('captured in')) process.stderr.write(`${line}\n`)
    expect(run.output).toMatch(/capture: stopped pid \d+ \(\S+\): it held \//)
    const captures = readdirSync(join(reports, 'stereos-captures'))
    expect(captures).toHaveLength(1)
    const capture = join(reports, 'stereos-captures', captures[0] as string)
    expect(captures[0]).toMatch(/^test_widget\.test\.ts-vm-.+\.stcap$/)
    // Named in the terminal (how to reopen it), the JUnit property and the JSON meta.
    expect(run.output).toContain(`npx stereos-harness debug ${relative(project, capture)}`)
    expect(readFileSync(join(reports, 'junit.xml'), 'utf8')).toMatch(/<property name="stereos capture" value="VM vm-[^"]* captured in [^"]*\.stcap/)
    const json = JSON.parse(readFileSync(join(reports, 'r.json'), 'utf8')) as {
      testResults: { assertionResults: { meta: { stereosCapture?: { path: string } } }[] }[]
    }
    expect(json.testResults[0]?.assertionResults[0]?.meta.stereosCapture?.path).toBe(capture)

    // No member holds the secret, decompressed; the manifest names the file and the test.
    const cli = join(repoRoot, 'packages', 'harness', 'dist', 'cli', 'main.js')
    const extracted = join(work, 'extracted')
    const extract = await runCommand(process.execPath, [cli, 'debug', capture, '--extract', extracted], { cwd: repoRoot, env: process.env })
    expect(extract.code, extract.output).toBe(0)
    for (const file of readdirSync(extracted)) {
      const path = join(extracted, file)
      const holds = execFileSync('sh', ['-c', `${file.endsWith('.zst') ? 'zstd -dc "$2"' : 'cat "$2"'} | grep -a -F -c -e "$1" || true`, 'sh', secret, path])
      expect(Number(holds.toString().trim()), `the secret in ${file}`).toBe(0)
    }
    const manifest = JSON.parse(readFileSync(join(extracted, 'manifest.json'), 'utf8'))
    expect(manifest.context).toMatchObject({ file: 'test/widget.test.ts', failedTests: ['the widget renders'], root: project, checkout: repoRoot })

    // The second machine: its own runtime dir and cache, and the checkout at another path (hard
    // links of what the guest needs: the project, the packages, node_modules).
    const checkout = join(work, 'elsewhere', 'checkout')
    mkdirSync(checkout, { recursive: true })
    for (const part of ['package.json', 'node_modules', 'packages']) execFileSync('cp', ['-al', join(repoRoot, part), join(checkout, part)])
    const localProject = join(checkout, relative(repoRoot, project))
    cpSync(project, localProject, { recursive: true })
    rmSync(join(localProject, 'written-before-failure.txt'), { force: true })
    writeFileSync(join(localProject, 'only-in-the-local-checkout.txt'), 'local edit\n')
    const cache = join(work, 'cache-b')
    mkdirSync(cache)
    for (const name of ['share', 'guest-node']) symlinkSync(join(realCache, name), join(cache, name))
    const runtimeB = join(work, 'runtime-b')
    const env = { ...process.env, STEREOS_RUNTIME_DIR: runtimeB, STEREOS_HARNESS_CACHE: cache }

    const node = manifest.context.node as string
    const client = `require('net').connect(7788, '127.0.0.1').on('data', (d) => process.stdout.write(d)).on('error', (e) => console.log('no service: ' + e.code))`
    const command = `pwd; id -u; cat written-before-failure.txt only-in-the-local-checkout.txt; ${node} -e "${client}"; exit 4`
    const debug = await runCommand(process.execPath, [cli, 'debug', capture, '--checkout', checkout, '--exec', command], { cwd: checkout, env })
    expect(debug.code, debug.output).toBe(4)
    expect(debug.output).toContain(`${project}\n`)
    expect(debug.output).toContain(`${manifest.context.testUser.uid}\n`)
    expect(debug.output).toContain('the test wrote this before failing')
    expect(debug.output).toContain('local edit')
    expect(debug.output).toContain('pong from the failed test')

    const rerun = await runCommand(process.execPath, [cli, 'debug', capture, '--checkout', checkout, '--rerun', '--inspect-port', '0'], { cwd: checkout, env })
    expect(rerun.output).toMatch(/debugger: attach to 127\.0\.0\.1:\d+/)
    expect(rerun.output).toContain('the widget renders')
    expect(rerun.output).toMatch(/Tests\s+1 failed/)
    expect(rerun.code, rerun.output).toBe(1)
    expect(vmDirs(runtimeB)).toEqual([])

    // A download cut short: one line naming the cause and the fix, no VM, nothing left behind.
    const cut = join(work, 'cut.stcap')
    writeFileSync(cut, readFileSync(capture).subarray(0, Math.floor(statSync(capture).size / 2)))
    const damaged = await runCommand(process.execPath, [cli, 'debug', cut, '--checkout', checkout, '--exec', 'true'], { cwd: checkout, env })
    expect(damaged.code).not.toBe(0)
    expect(damaged.output).toMatch(/cut\.stcap is not a readable capture: .*\n.*download it again/)
    expect(vmDirs(runtimeB)).toEqual([])
    expect(readdirSync(join(runtimeB, 'captures'))).toEqual([])
  },
)
