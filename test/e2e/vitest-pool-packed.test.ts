import { mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, relative } from 'node:path'
import type { Arch } from '@stereos/harness'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { fixtureDir, repoRoot, runCommand, runtimeDir } from './support.js'
import type { CommandResult } from './support.js'

const arch: Arch = process.arch === 'arm64' ? 'aarch64' : 'x86_64'
/** This repo's Node 24 and its npm: what a user's CI would have. */
const env: NodeJS.ProcessEnv = { ...process.env, PATH: `${dirname(process.execPath)}:${process.env.PATH}`, NO_COLOR: '1' }
delete env.STEREOS_FIXTURE_BUILDER

function sh(file: string, args: string[], cwd: string, extra: Record<string, string> = {}): Promise<CommandResult> {
  return runCommand(file, args, { cwd, env: { ...env, ...extra } })
}

/**
 * #13.9: the packages as a user gets them. `npm pack` the three packages, install the tarballs
 * (and Vitest from npm) into a fresh project outside this repo, and run `vitest run
 * --pool=stereos` there, with the guest named the way a user names one: a mixtape reference
 * (here an unpacked mixtape directory, the fixture build's output; a registry `name:tag` works
 * the same way through `stereos-harness pull`).
 */
describe('the packed packages, installed into a project outside the repo', () => {
  const root = realpathSync(mkdtempSync(join(tmpdir(), 'sh-packed-')))
  const project = join(root, 'project')
  afterAll(() => rmSync(root, { recursive: true, force: true }))

  beforeAll(async () => {
    expect(relative(repoRoot, project).startsWith('..')).toBe(true)
    const npm = await sh(
      'npm',
      ['pack', '-w', 'native', '-w', 'packages/harness', '-w', 'packages/vitest-plugin', '--pack-destination', root, '--silent'],
      repoRoot,
    )
    expect(npm.code, npm.output).toBe(0)
    const tgz = (prefix: string) => `file:../${readdirSync(root).find((f) => f.startsWith(prefix) && f.endsWith('.tgz'))}`
    const vitestVersion = (JSON.parse(readFileSync(join(repoRoot, 'node_modules', 'vitest', 'package.json'), 'utf8')) as { version: string }).version
    mkdirSync(join(project, 'tests'), { recursive: true })
    writeFileSync(
      join(project, 'package.json'),
      JSON.stringify({
        name: 'outside-project',
        private: true,
        type: 'module',
        devDependencies: {
          '@stereos/harness': tgz('stereos-harness-'),
          '@stereos/vitest-plugin': tgz('stereos-vitest-plugin-'),
          '@stereos/vsock': tgz('stereos-vsock-'),
          vitest: vitestVersion,
        },
        overrides: { '@stereos/harness': '$@stereos/harness', '@stereos/vsock': '$@stereos/vsock' },
      }),
    )
    const install = await sh('npm', ['install', '--no-package-lock', '--no-audit', '--no-fund', '--prefer-offline'], project)
    expect(install.code, install.output).toBe(0)
    writeFileSync(
      join(project, 'vitest.config.ts'),
      `import { stereos } from '@stereos/vitest-plugin'
import { defineConfig } from 'vitest/config'

export default defineConfig({
  plugins: [stereos({ mixtape: process.env.GUEST_MIXTAPE ?? 'fixture' })],
  test: { include: ['tests/**/*.test.ts'], maxWorkers: 1 },
})
`,
    )
    writeFileSync(
      join(project, 'tests', 'guest.test.ts'),
      `import { readFileSync } from 'node:fs'
import { describe } from '@stereos/vitest-plugin'
import { expect, test } from 'vitest'

test('runs inside a stereOS VM', () => {
  expect(process.env.STEREOS_SANDBOX).toBe('1')
  expect(readFileSync('/proc/cmdline', 'utf8')).toMatch(/console=/)
})

describe.sandbox('with describe.sandbox', { resources: { memory: '512MiB' } }, () => {
  test('the suite knows it is sandboxed', ({ task }) => {
    expect(task.meta).toMatchObject({ stereos: { sandbox: true, resources: { memory: '512MiB' } } })
  })
})
`,
    )
  }, 300_000)

  test('vitest run --pool=stereos, with the guest named by a mixtape directory: the tests pass in a VM', async () => {
    const mixtape = await fixtureDir(arch)
    const { code, output } = await sh(process.execPath, ['node_modules/vitest/vitest.mjs', 'run', '--pool=stereos'], project, {
      GUEST_MIXTAPE: mixtape,
      STEREOS_RUNTIME_DIR: runtimeDir(),
    })
    expect(output).toMatch(/Tests\s+2 passed \(2\)/)
    expect(output).toContain('1 test file(s) ran in 1 VM boot(s)')
    expect(code).toBe(0)
  }, 600_000)

  test("mixtape 'fixture' outside this repo fails the file with what to do, not the run", async () => {
    const { code, output } = await sh(process.execPath, ['node_modules/vitest/vitest.mjs', 'run', '--pool=stereos'], project, {
      STEREOS_RUNTIME_DIR: runtimeDir(),
    })
    expect(code).toBe(1)
    expect(output).toMatch(/FAIL\s+tests\/guest\.test\.ts[\s\S]*mixtape "fixture" needs the stereos-harness repository[\s\S]*Fix: .*name a real mixtape/)
    expect(output).not.toMatch(/Unhandled Error/)
  }, 120_000)
})
