import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, test } from 'vitest'
import { repoRoot, treeHash, vitestCli } from './support.js'
import type { CommandResult } from './support.js'

/** The real vitest CLI; never throws on test failures (exit code 1). */
function vitest(cwd: string, args: string[], env: Record<string, string> = {}): Promise<CommandResult> {
  return vitestCli(cwd, ['run', ...args], env)
}

interface JsonReport {
  numPassedTests: number
  numFailedTests: number
  testResults: { assertionResults: { fullName: string; status: string; meta: Record<string, unknown>; failureMessages: string[] }[] }[]
}

describe("the guest's view of the project (real vitest CLI, fixture VMs)", () => {
  const dirs: string[] = []
  afterAll(() => {
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true })
  })

  /** A copy of an example project inside the repo, as a user's project is. */
  function copy(name: string): string {
    const dir = join(repoRoot, 'fixtures', 'projects', `.run-${name}-${process.pid}-${Date.now()}`)
    cpSync(join(repoRoot, 'fixtures', 'projects', name), dir, { recursive: true })
    dirs.push(dir)
    return dir
  }

  test('a hostile test file tries every door to the host: each attempt fails in the guest, the host tree is unchanged', async () => {
    const dir = copy('guest-view')
    const secrets = mkdtempSync(join(tmpdir(), 'stereos-host-only-'))
    dirs.push(secrets)
    writeFileSync(join(secrets, 'secret.txt'), 'host-only secret\n')
    // A link in the project pointing out of it (what a project may hold by accident or on purpose).
    symlinkSync(secrets, join(dir, 'outside'))
    mkdirSync(join(dir, '.git', 'hooks'), { recursive: true })
    const reports = mkdtempSync(join(tmpdir(), 'stereos-view-report-'))
    dirs.push(reports)
    const skip = ['.vitest', 'node_modules']
    const before = treeHash(dir, skip)
    const secret = `s3cret-${process.pid}-${Date.now()}`
    const { code, output } = await vitest(dir, ['--pool=stereos', '--reporter=default', '--reporter=json', `--outputFile.json=${join(reports, 'r.json')}`], {
      HOST_ONLY_FILE: join(secrets, 'secret.txt'),
      STEREOS_E2E_SECRET: secret,
      GITHUB_TOKEN: 'ghp_hostonly',
      NPM_TOKEN: 'npm_hostonly',
      ACTIONS_ID_TOKEN_REQUEST_TOKEN: 'oidc-hostonly',
      NODE_EXTRA_CA_CERTS: join(secrets, 'secret.txt'),
      HTTPS_PROXY: 'http://127.0.0.1:9',
      MY_APP_SECRET: 'app-hostonly',
    })
    const report = JSON.parse(readFileSync(join(reports, 'r.json'), 'utf8')) as JsonReport
    const failures = report.testResults.flatMap((f) =>
      f.assertionResults.filter((a) => a.status !== 'passed').map((a) => `${a.fullName}: ${a.failureMessages.join('\n')}`),
    )
    expect(failures).toEqual([])
    expect(code, output).toBe(0)
    expect(report.numPassedTests).toBe(9)
    // Nothing the guest did reached the host: not the writes, the links, the config change.
    expect(treeHash(dir, skip)).toBe(before)
    expect(existsSync('/tmp/planted-by-guest')).toBe(false)
    expect(readFileSync(join(secrets, 'secret.txt'), 'utf8')).toBe('host-only secret\n')
    // The secret reached no report (that it reaches the guest: test/security/secrets.test.ts).
    const suite = report.testResults.flatMap((f) => f.assertionResults).find((a) => a.fullName.startsWith('a suite with a secret'))
    expect(suite?.meta).toEqual({ stereos: { secrets: ['STEREOS_E2E_SECRET'], sandbox: true } })
    expect(readFileSync(join(reports, 'r.json'), 'utf8')).not.toContain(secret)
    expect(output).not.toContain(secret)
  }, 900_000)

  for (const provider of ['v8', 'istanbul'] as const) {
    test(`--coverage with ${provider} counts lines that ran only in the guest`, async () => {
      const dir = copy('coverage')
      const { code, output } = await vitest(dir, ['--pool=stereos', '--coverage', `--coverage.provider=${provider}`])
      expect(code, output).toBe(0)
      const final = JSON.parse(readFileSync(join(dir, 'coverage', 'coverage-final.json'), 'utf8')) as Record<
        string,
        { statementMap: Record<string, { start: { line: number } }>; s: Record<string, number> }
      >
      const lib = final[join(dir, 'src', 'lib.ts')]
      expect(lib, Object.keys(final).join(', ')).toBeDefined()
      const hits = (line: number) =>
        Object.entries(lib!.statementMap)
          .filter(([, loc]) => loc.start.line === line)
          .map(([id]) => lib!.s[id])
      // onlyInGuest's body ran once, in the guest; neverCalled's never.
      expect(hits(3)).toEqual([1])
      expect(hits(4)).toEqual([1])
      expect(hits(9)).toEqual([0])
    }, 600_000)
  }
})
