import { execFile } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { chownSync, cpSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, relative } from 'node:path'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { harnessCacheDir } from '../../packages/harness/src/host/cache-dir.js'
import { chooseTestUser, imageIds } from '../../packages/vitest-plugin/src/pool/test-user.js'
import { createSecondUser, type SecondUser, secondUserSkipReason } from '../../packages/harness/test/support/second-user.js'
import { type CommandResult, repoRoot, runCommand, treeHash, VITEST_CLI } from '../e2e/support.js'

/**
 * Issue 19's attack suite: the test files of fixtures/projects/hostile attack the host from a
 * real VM, as a pull request from a fork could, in one vitest run (one VM; the files whose
 * describe.sandbox options are refused never get one). Each file asserts in the guest what it
 * can see; this file asserts what the host printed, wrote and kept: every refusal logged and
 * named, each file's outcome, no byte of the host secret in any output, no host file changed,
 * nothing run on the host, no process an earlier file started still alive. A second run, as a
 * non-root host user, checks the privilege items where the guest worker is not root.
 */

interface JsonReport {
  numPassedTests: number
  numFailedTests: number
  numPendingTests: number
  testResults: {
    name: string
    status: string
    message: string
    assertionResults: { title: string; status: string; failureMessages: string[] }[]
  }[]
}

/** The files under `dir` (links not followed), for grepping. */
function filesUnder(dir: string): string[] {
  if (!existsSync(dir)) return []
  const out: string[] = []
  const walk = (at: string) => {
    for (const name of readdirSync(at)) {
      const path = join(at, name)
      const stat = lstatSync(path)
      if (stat.isDirectory()) walk(path)
      else if (stat.isFile()) out.push(path)
    }
  }
  walk(dir)
  return out
}

/** Each file's content hash by path under `dir` (links by target), to name what changed when the tree hash differs. */
function listing(dir: string, skip: string[]): Record<string, string> {
  const out: Record<string, string> = {}
  const walk = (at: string) => {
    for (const name of readdirSync(at)) {
      const path = join(at, name)
      const rel = relative(dir, path)
      if (skip.includes(rel)) continue
      const stat = lstatSync(path)
      if (stat.isDirectory()) walk(path)
      else out[rel] = stat.isSymbolicLink() ? `-> ${readlinkSync(path)}` : createHash('sha256').update(readFileSync(path)).digest('hex')
    }
  }
  walk(dir)
  return out
}

/** The line (1-based) of the first line of `file` containing `text`. */
function lineOf(file: string, text: string): number {
  const index = readFileSync(file, 'utf8')
    .split('\n')
    .findIndex((line) => line.includes(text))
  if (index < 0) throw new Error(`${text} is not in ${file}`)
  return index + 1
}

/** A copy of the hostile project inside the repo, as a user's project is (`.run-*` is git-ignored). */
function copyProject(tag: string, secretDir: string): string {
  const dir = join(repoRoot, 'fixtures', 'projects', `.run-hostile-${tag}-${process.pid}-${Date.now()}`)
  cpSync(join(repoRoot, 'fixtures', 'projects', 'hostile'), dir, { recursive: true })
  const shared = join(dir, 'f-shared.test.ts')
  writeFileSync(shared, readFileSync(shared, 'utf8').replace('__SECRET_DIR__', secretDir))
  // Targets the attacks name: a git dir with hooks, a package in node_modules.
  mkdirSync(join(dir, '.git', 'hooks'), { recursive: true })
  mkdirSync(join(dir, 'node_modules', 'x'), { recursive: true })
  writeFileSync(join(dir, 'node_modules', 'x', 'index.js'), 'export {}\n')
  return dir
}

/** Vitest's and Vite's own output under the project (searched for the secret, not hashed). */
const OUTPUT_DIRS = ['.vitest', join('node_modules', '.vite'), join('node_modules', '.vite-temp')]

/** The marker pwn.sh and the planted payloads would create on the host. */
const PWNED = '/tmp/stereos-hostile-pwned'

describe('hostile test files against the sandbox boundary (issue 19; real vitest CLI, one fixture VM)', () => {
  const cleanup: string[] = []
  const token = `hostile-${randomBytes(16).toString('hex')}`
  let dir: string
  let secretDir: string
  let reports: string
  let runtime: string
  let run: CommandResult
  let report: JsonReport
  let before: string
  let beforeFiles: Record<string, string>
  let repoPackageJson: string
  let seconds: number

  beforeAll(async () => {
    secretDir = mkdtempSync(join(tmpdir(), 'stereos-host-secret-'))
    writeFileSync(join(secretDir, 'secret.json'), `{"token": "${token}"}\n`)
    writeFileSync(join(secretDir, 'secret.ts'), `export const token = '${token}'\n// ${token}\nthrow new Error('${token}')\n`)
    reports = mkdtempSync(join(tmpdir(), 'stereos-hostile-reports-'))
    runtime = mkdtempSync(join(tmpdir(), 'stereos-hostile-runtime-'))
    mkdirSync(join(runtime, 'vms'))
    dir = copyProject('root', secretDir)
    cleanup.push(secretDir, reports, runtime, dir)
    rmSync(PWNED, { force: true })
    before = treeHash(dir, OUTPUT_DIRS)
    beforeFiles = listing(dir, OUTPUT_DIRS)
    repoPackageJson = readFileSync(join(repoRoot, 'package.json'), 'utf8')
    const started = Date.now()
    run = await runCommand(
      process.execPath,
      [
        VITEST_CLI,
        'run',
        '--pool=stereos',
        '--reporter=default',
        '--reporter=json',
        `--outputFile.json=${join(reports, 'report.json')}`,
        '--reporter=junit',
        `--outputFile.junit=${join(reports, 'junit.xml')}`,
        '--reporter=blob',
        `--outputFile.blob=${join(reports, 'blob.json')}`,
      ],
      {
        cwd: dir,
        env: { ...process.env, HOST_SECRET_DIR: secretDir, HOST_SECRET_ENV: token, STEREOS_RUNTIME_DIR: runtime, NO_COLOR: '1' },
      },
    )
    seconds = Math.round((Date.now() - started) / 1000)
    report = JSON.parse(readFileSync(join(reports, 'report.json'), 'utf8')) as JsonReport
  }, 900_000)

  afterAll(() => {
    for (const path of cleanup) rmSync(path, { recursive: true, force: true })
  })

  const file = (name: string) => join(dir, name)
  const result = (name: string) => {
    const found = report.testResults.find((r) => r.name === file(name))
    if (!found) throw new Error(`${name} is not in the JSON report: ${report.testResults.map((r) => r.name).join(', ')}\n${run.output}`)
    return found
  }
  /** A refusal the pool logs on the host, as the firewall words it. */
  const refused = (name: string, why: string) => `stereos: refused from the guest worker of ${file(name)}: ${why}`

  test('each file has its expected outcome: the attacks fail in the guest, refused options fail their file, the others run on', () => {
    expect(run.code, run.output).toBe(1)
    const outcomes = Object.fromEntries(
      report.testResults.map((r) => [r.name.slice(dir.length + 1), [r.status, ...r.assertionResults.map((a) => `${a.status}: ${a.title}`)].join(' | ')]),
    )
    const purposeful = 'FAILS ON PURPOSE'
    // Every failure of the files that must pass, named together (one bug does not hide the next).
    const failures = ['a-rpc.test.ts', 'b-frames.test.ts', 'd-snapshot.test.ts', 'j-leftover-1.test.ts', 'k-leftover-2.test.ts'].flatMap((name) => {
      const r = result(name)
      if (r.assertionResults.length === 0) return [`${name}: ${r.status} with no tests: ${r.message}`]
      return r.assertionResults.filter((a) => a.status !== 'passed').map((a) => `${name} > ${a.title}: ${a.failureMessages.join('\n')}`)
    })
    expect(failures, `${seconds}s run\n${JSON.stringify(outcomes, null, 2)}`).toEqual([])
    const privilege = result('i-privilege.test.ts')
    expect(privilege.assertionResults.filter((a) => a.status === 'failed').map((a) => `${a.title}: ${a.failureMessages.join('\n')}`)).toEqual([])
    // Never root in the guest, whoever runs Vitest: nothing of the privilege file skips.
    expect(privilege.assertionResults.filter((a) => a.status !== 'passed').map((a) => a.title)).toEqual([])
    const host = { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 }
    const guest = chooseTestUser(host, fixtureImageIds(), 'unprivileged')
    expect(run.output).toContain(`guest worker uid=${guest.uid} gid=${guest.gid} Groups:`)
    const stack = result('c-stack.test.ts')
    expect(stack.assertionResults.map((a) => [a.title.startsWith(purposeful) ? 'failed' : 'passed', a.status])).toEqual([
      ['passed', 'passed'],
      ['failed', 'failed'],
      ['failed', 'failed'],
    ])
    const [, thrown, assertion] = stack.assertionResults
    expect(thrown?.failureMessages.join('\n')).toMatch(/planted stack/)
    expect(assertion?.failureMessages.join('\n')).toMatch(/expected 'guest' to be 'host'/)
    expect(report.numFailedTests, JSON.stringify(outcomes, null, 2)).toBe(2)
  })

  test('describe.sandbox host-side options fail their file, naming the option, file, line and where it belongs', () => {
    const fail = (name: string) => {
      const r = result(name)
      expect(r.status, name).toBe('failed')
      expect(r.assertionResults, name).toEqual([])
      return r.message
    }
    const projectFix = (key: string) => `set ${key} in the project's stereos() options in vitest.config`
    const qemu = fail('e-qemu-binary.test.ts')
    expect(qemu).toContain(
      `${file('e-qemu-binary.test.ts')}:${lineOf(file('e-qemu-binary.test.ts'), 'qemuBinary:')}: describe.sandbox option qemuBinary is refused`,
    )
    expect(qemu).toContain(projectFix('qemuBinary'))
    const shared = fail('f-shared.test.ts')
    expect(shared).toContain(`${file('f-shared.test.ts')}:${lineOf(file('f-shared.test.ts'), 'shared:')}: describe.sandbox option shared is refused`)
    expect(shared).toContain(projectFix('shared'))
    const env = fail('g-env.test.ts')
    expect(env).toContain(
      `${file('g-env.test.ts')}:${lineOf(file('g-env.test.ts'), 'process.env.HOST_SECRET_ENV')}: describe.sandbox option env.X reads process.env.HOST_SECRET_ENV: a test file may not copy host values into its VM`,
    )
    expect(env).toContain("read it in the project's stereos() options in vitest.config instead")
    const forwards = fail('h-forwards.test.ts')
    const mixtapeAt = `${file('h-forwards.test.ts')}:${lineOf(file('h-forwards.test.ts'), 'mixtape:')}: describe.sandbox option mixtape is refused`
    const forwardsAt = `${file('h-forwards.test.ts')}:${lineOf(file('h-forwards.test.ts'), 'forwards:')}: describe.sandbox option network.forwards is refused`
    const runtimeAt = `${file('h-forwards.test.ts')}:${lineOf(file('h-forwards.test.ts'), 'runtimeDir:')}: describe.sandbox option runtimeDir is refused`
    expect(forwards).toContain(forwardsAt)
    expect(forwards).toContain(runtimeAt)
    expect(forwards).toContain(mixtapeAt)
    expect(forwards.indexOf(forwardsAt)).toBeLessThan(forwards.indexOf(runtimeAt))
    expect(forwards.indexOf(runtimeAt)).toBeLessThan(forwards.indexOf(mixtapeAt))
    expect(forwards).toContain(projectFix('network.forwards'))
    // The terminal says it too.
    for (const key of ['qemuBinary', 'shared', 'network.forwards', 'runtimeDir', 'mixtape'])
      expect(run.output).toContain(`describe.sandbox option ${key} is refused`)
  })

  test('every refused RPC call and raw frame is logged on the host, naming what was refused', () => {
    const expected = [
      ...Array(4).fill(refused('a-rpc.test.ts', 'the guest may not call writeBenchmarkResult: it writes a host file the guest names')),
      refused('a-rpc.test.ts', 'the guest may not call readBenchmarkResult: it reads a host file the guest names'),
      refused('a-rpc.test.ts', "the guest may not call transform: only Vitest's vm pools use it"),
      refused('a-rpc.test.ts', "the guest may not call stealHostFile: it is not one of the methods Vitest 5's worker calls"),
      ...['constructor', 'hasOwnProperty', 'toString', '__defineGetter__'].map((m) => refused('a-rpc.test.ts', `the guest may not call ${m}: `)),
      refused('a-rpc.test.ts', `fetch refused: ${join(secretDir, 'secret.ts')} is outside the project view`),
      refused('a-rpc.test.ts', `fetch refused: ${join(secretDir, 'secret.ts')}?raw is outside the project view`),
      refused('a-rpc.test.ts', `resolve refused: ${join(secretDir, 'secret.ts')} is outside the project view`),
      refused('a-rpc.test.ts', `ensureModuleGraphEntry refused: ${join(secretDir, 'secret.ts')} is outside the project view`),
      refused('b-frames.test.ts', 'a call of fetch with an id that is not a birpc id'),
      refused('b-frames.test.ts', `fetch refused: ${join(secretDir, 'secret.ts')}?raw is outside the project view`),
      refused('b-frames.test.ts', `fetch refused: /@fs${join(secretDir, 'secret.json')} is outside the project view`),
      refused('b-frames.test.ts', 'a second call of fetch with id hostile-dup while the first is in flight'),
      refused('b-frames.test.ts', 'a call of getCountOfFailedTests with an id that is not a birpc id'),
      refused('b-frames.test.ts', "the arguments of onTaskArtifactRecord do not match what Vitest's worker sends (arguments: "),
      refused('b-frames.test.ts', "the arguments of fetch do not match what Vitest's worker sends (0: "),
      ...Array(2).fill(refused('b-frames.test.ts', 'a reply to no call of Vitest')),
      refused('b-frames.test.ts', 'a message that is not an object'),
      refused('b-frames.test.ts', 'the guest may not call writeBenchmarkResult: '),
      refused('b-frames.test.ts', 'the guest may not call __proto__: '),
      refused('c-stack.test.ts', `ensureModuleGraphEntry refused: ${join(secretDir, 'secret.ts')} is outside the project view`),
      ...[join(dir, 'node_modules', 'x', 'a.test.ts'), join(dir, '.git', 'hooks', 'a.test.ts'), join(dir, 'a-rpc.test.ts'), join(dir, '..', 'x.test.ts')].map(
        (path) => refused('d-snapshot.test.ts', `resolveSnapshotPath refused: ${path} is not a test file the pool sent this worker`),
      ),
    ]
    const lines = run.output.split('\n')
    const missing: string[] = []
    // Each expected line once: a line repeated N times must be there N times.
    const used = new Set<number>()
    for (const want of expected) {
      const at = lines.findIndex((line, i) => !used.has(i) && line.startsWith(want))
      if (at < 0) missing.push(want)
      else used.add(at)
    }
    expect(
      missing,
      run.output
        .split('\n')
        .filter((l) => l.includes('stereos: refused'))
        .join('\n'),
    ).toEqual([])
  })

  test('no byte of the host secret in any output: terminal, JSON, JUnit, blob, attachments, project dir, runtime dir', () => {
    const contents = ['secret.json', 'secret.ts'].map((name) => readFileSync(join(secretDir, name)))
    const needles = [
      token,
      token.slice('hostile-'.length),
      Buffer.from(token).toString('base64'),
      Buffer.from(token).toString('hex'),
      'export const token',
      ...contents.map((c) => c.toString('base64')),
    ]
    const places: [string, string][] = [
      ['terminal', run.output],
      ...filesUnder(reports).map((path): [string, string] => [path, readFileSync(path, 'latin1')]),
      ...filesUnder(dir).map((path): [string, string] => [path, readFileSync(path, 'latin1')]),
      ...filesUnder(runtime).map((path): [string, string] => [path, readFileSync(path, 'latin1')]),
    ]
    // The reports are there to be searched: each holds every file of the run.
    for (const name of ['report.json', 'junit.xml', 'blob.json']) expect(readFileSync(join(reports, name), 'utf8')).toContain('c-stack.test.ts')
    const leaks = places.flatMap(([where, text]) => needles.filter((n) => text.includes(n)).map((n) => `${where}: ${n}`))
    expect(leaks).toEqual([])
    // The planted stacks reached the report with the secret's frames scrubbed.
    expect(readFileSync(join(reports, 'report.json'), 'utf8')).toContain('at <a file outside the project view>')
  })

  test('no host file changed and nothing ran on the host', () => {
    const after = listing(dir, OUTPUT_DIRS)
    const changed = [...new Set([...Object.keys(beforeFiles), ...Object.keys(after)])].filter((rel) => beforeFiles[rel] !== after[rel]).sort()
    expect(changed).toEqual([])
    expect(treeHash(dir, OUTPUT_DIRS)).toBe(before)
    expect(readFileSync(join(repoRoot, 'package.json'), 'utf8')).toBe(repoPackageJson)
    expect(existsSync(PWNED)).toBe(false)
    expect(existsSync(join(dir, 'PWNED'))).toBe(false)
    expect(existsSync(join(repoRoot, 'node_modules', 'vitest', '__snapshots__'))).toBe(false)
    expect(existsSync(join(dir, '__snapshots__'))).toBe(false)
    expect(readFileSync(join(secretDir, 'secret.json'), 'utf8')).toBe(`{"token": "${token}"}\n`)
  })
})

const execFileAsync = promisify(execFile)

/**
 * The privilege items as a host user who is not root: the guest worker then runs as that uid,
 * so it must have no_new_privs, no groups, no sudo, and find nothing an earlier file left.
 */
describe.skipIf(secondUserSkipReason())('the privilege items as a non-root host user (one more fixture VM)', () => {
  let user: SecondUser
  const cleanup: string[] = []
  let output = ''
  let report: JsonReport
  let code = 0

  beforeAll(async () => {
    // Numbered above the image's users (1000, 1001): this run keeps its host uid in the guest,
    // the root run above gets the dedicated one, so both ways are tried.
    user = createSecondUser({ firstId: 2000 })
    const home = mkdtempSync(join(tmpdir(), 'stereos-hostile-home-'))
    const secretDir = mkdtempSync(join(tmpdir(), 'stereos-host-secret-'))
    const dir = copyProject('user', secretDir)
    cleanup.push(home, secretDir, dir)
    // The guest's Node comes from npm once per user cache; this user's is seeded from ours (as CI restores a cache).
    const guestNode = join(harnessCacheDir(), 'guest-node')
    for (const name of existsSync(guestNode) ? readdirSync(guestNode).filter((n) => n.includes('-x64-')) : []) {
      cpSync(join(guestNode, name), join(home, 'cache', 'stereos-harness', 'guest-node', name), { recursive: true })
    }
    for (const root of [home, dir]) for (const path of [root, ...dirsUnder(root), ...filesUnder(root)]) chownSync(path, user.uid, user.gid)
    const reportFile = join(home, 'report.json')
    try {
      const out = await execFileAsync(
        process.execPath,
        [
          VITEST_CLI,
          'run',
          '--pool=stereos',
          '--reporter=default',
          '--reporter=json',
          `--outputFile.json=${reportFile}`,
          'i-privilege',
          'j-leftover',
          'k-leftover',
        ],
        {
          cwd: dir,
          uid: user.uid,
          gid: user.gid,
          maxBuffer: 64 * 1024 * 1024,
          timeout: 600_000,
          env: {
            PATH: process.env.PATH ?? '/usr/bin:/bin',
            HOME: home,
            XDG_CACHE_HOME: join(home, 'cache'),
            STEREOS_RUNTIME_DIR: join(home, 'runtime'),
            // A cold boot as a new user: saving a template for later runs would only cost time.
            STEREOS_TEMPLATE: 'off',
            HOST_SECRET_DIR: secretDir,
            NO_COLOR: '1',
          },
        },
      )
      output = out.stdout + out.stderr
    } catch (err) {
      const e = err as { code?: unknown; stdout?: string; stderr?: string }
      if (typeof e.code !== 'number') throw err
      code = e.code
      output = `${e.stdout ?? ''}${e.stderr ?? ''}`
    }
    if (!existsSync(reportFile)) throw new Error(`the run as ${user.name} (uid ${user.uid}) wrote no report (exit ${code}):\n${output}`)
    report = JSON.parse(readFileSync(reportFile, 'utf8')) as JsonReport
  }, 900_000)

  afterAll(() => {
    for (const path of cleanup) rmSync(path, { recursive: true, force: true })
    user?.remove()
  })

  test('the guest worker runs as the test user with no_new_privs, no groups, no sudo; no earlier process survives', () => {
    const results = report.testResults.flatMap((r) => [
      ...(r.status === 'failed' && r.assertionResults.length === 0 ? [`${r.name}: ${r.message}`] : []),
      ...r.assertionResults.filter((a) => a.status !== 'passed').map((a) => `${r.name} > ${a.title}: ${a.status} ${a.failureMessages.join('\n')}`),
    ])
    expect(results, output).toEqual([])
    expect(report.numPassedTests, output).toBe(8)
    expect(code, output).toBe(0)
    const guest = chooseTestUser(user, fixtureImageIds(), 'unprivileged')
    expect(output).toContain(`guest worker uid=${guest.uid} gid=${guest.gid} Groups:`)
    expect(output).toMatch(/NoNewPrivs:\s+1/)
  })
})

/** The users and groups the fixture guest's image names (its rootfs source). */
function fixtureImageIds() {
  const etc = join(repoRoot, 'fixtures', 'guest', 'rootfs', 'etc')
  return imageIds(readFileSync(join(etc, 'passwd'), 'utf8'), readFileSync(join(etc, 'group'), 'utf8'))
}

function dirsUnder(dir: string): string[] {
  const out: string[] = []
  const walk = (at: string) => {
    for (const name of readdirSync(at)) {
      const path = join(at, name)
      if (lstatSync(path).isDirectory()) {
        out.push(path)
        walk(path)
      }
    }
  }
  walk(dir)
  return out
}
