import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { basename, join, relative } from 'node:path'
import type { Arch } from '@stereos/harness'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { npmTarballOverrides, packedEnv as env, packWorkspaces, repoVitestVersion as vitestVersion } from './packed.js'
import { fixtureDir, repoRoot, runCommand, runtimeDir } from './support.js'
import type { CommandResult } from './support.js'

const arch: Arch = process.arch === 'arm64' ? 'aarch64' : 'x86_64'
/** pnpm, from this repo's devDependencies (`npm ci` puts it there). */
const PNPM = join(repoRoot, 'node_modules', '.bin', 'pnpm')
/** The suite both installs run: three files, a globalSetup that provides a host port, one describe.sandbox. */
const SUITE = join(repoRoot, 'fixtures', 'projects', 'packed')

function sh(file: string, args: string[], cwd: string, extra: Record<string, string> = {}): Promise<CommandResult> {
  return runCommand(file, args, { cwd, env: { ...env, ...extra } })
}

function vitestRun(project: string, extra: Record<string, string> = {}): Promise<CommandResult> {
  // Templates on (the default; a caller's STEREOS_TEMPLATE=off must not make this a cold boot).
  return sh(process.execPath, ['node_modules/vitest/vitest.mjs', 'run', '--pool=stereos'], project, {
    STEREOS_RUNTIME_DIR: runtimeDir(),
    STEREOS_TEMPLATE: 'auto',
    ...extra,
  })
}

/**
 * #13.9, #20: the packages as a user gets them. `npm pack` the three packages, install the
 * tarballs (and Vitest from npm) into fresh projects outside this repo — once with npm, once
 * with pnpm's isolated layout with nothing hoisted, where a package sees only what it declares
 * (the layout that fails on an undeclared import such as the plugin's old `vite`) — and run
 * `vitest run --pool=stereos` there, with the guest named the way a user names one: a mixtape
 * reference (here an unpacked mixtape directory, the fixture build's output; a registry
 * `name:tag` works the same way through `stereos-harness pull`).
 */
describe('the packed packages, installed into a project outside the repo', () => {
  const root = realpathSync(mkdtempSync(join(tmpdir(), 'sh-packed-')))
  /** `file:` specs of the packed tarballs by package name, relative to a project in `root`. */
  let tgz: Record<string, string> = {}
  afterAll(() => rmSync(root, { recursive: true, force: true }))

  beforeAll(async () => {
    tgz = Object.fromEntries(Object.entries(await packWorkspaces(root)).map(([name, path]) => [name, `file:../${basename(path)}`]))
  }, 120_000)

  /** A fresh project in `root` with the suite copied in and `manifest` as its package.json. */
  function project(name: string, manifest: (tarballs: Record<string, string>) => object): string {
    const dir = join(root, name)
    expect(relative(repoRoot, dir).startsWith('..')).toBe(true)
    mkdirSync(dir)
    cpSync(SUITE, dir, { recursive: true, filter: (src) => !src.includes('node_modules') })
    const tarballs = {
      '@stereos/harness': tgz['@stereos/harness']!,
      '@stereos/vitest-plugin': tgz['@stereos/vitest-plugin']!,
      '@stereos/vsock': tgz['@stereos/vsock']!,
    }
    writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: `outside-${name}`, private: true, type: 'module', ...manifest(tarballs) }))
    return dir
  }

  /** What the suite must show, whichever package manager installed it. */
  async function runsInOneVm(dir: string): Promise<void> {
    const mixtape = await fixtureDir(arch)
    const { code, output } = await vitestRun(dir, { GUEST_MIXTAPE: mixtape })
    expect(output).toMatch(/Test Files\s+3 passed \(3\)/)
    expect(output).toMatch(/Tests\s+4 passed \(4\)/)
    expect(output).toContain('3 test file(s) ran in 1 VM boot(s)')
    // The port and token globalSetup provided on the host are what the guest's test injected.
    const provided = JSON.parse(readFileSync(join(dir, 'host-service.json'), 'utf8')) as { port: number; token: string }
    expect(output).toContain(`injected hostService ${JSON.stringify(provided)}`)
    expect(code, output).toBe(0)
  }

  describe('with npm', () => {
    let dir = ''
    beforeAll(async () => {
      dir = project('npm', (tarballs) => ({
        devDependencies: { ...tarballs, vitest: vitestVersion },
        // The plugin's and the harness's `^0.1.0` resolve to the tarballs, not the registry.
        overrides: npmTarballOverrides,
      }))
      const install = await sh('npm', ['install', '--no-package-lock', '--no-audit', '--no-fund', '--prefer-offline'], dir)
      expect(install.code, install.output).toBe(0)
    }, 300_000)

    test('vitest run --pool=stereos, with the guest named by a mixtape directory: the suite passes in one VM', () => runsInOneVm(dir), 600_000)

    test("mixtape 'fixture' outside this repo: one startup error with what to do, before any VM (#20)", async () => {
      const { code, output } = await vitestRun(dir)
      expect(code).toBe(1)
      expect(output).toMatch(/Startup Error[\s\S]*mixtape "fixture" needs the stereos-harness repository[\s\S]*Fix: .*name a real mixtape/)
      expect(output.match(/needs the stereos-harness repository/g)?.length).toBe(1)
      expect(output).not.toMatch(/guest\.test\.ts > /)
      expect(output).not.toMatch(/VM boot/)
    }, 120_000)
  })

  describe('with pnpm, isolated and nothing hoisted', () => {
    let dir = ''
    beforeAll(async () => {
      dir = project('pnpm', (tarballs) => ({
        devDependencies: { ...tarballs, vitest: vitestVersion },
        pnpm: { overrides: { '@stereos/harness': tarballs['@stereos/harness'], '@stereos/vsock': tarballs['@stereos/vsock'] } },
      }))
      // hoist=false: not even node_modules/.pnpm/node_modules, so a package resolves only what it declares.
      writeFileSync(join(dir, '.npmrc'), 'node-linker=isolated\nhoist=false\npublic-hoist-pattern=\n')
      const install = await sh(PNPM, ['install', '--prefer-offline', '--reporter=append-only'], dir)
      expect(install.code, install.output).toBe(0)
    }, 300_000)

    test('the layout is isolated: only direct dependencies at the top, no hidden hoist', () => {
      expect(readdirSync(join(dir, 'node_modules', '@stereos')).sort()).toEqual(['harness', 'vitest-plugin', 'vsock'])
      expect(existsSync(join(dir, 'node_modules', 'vite'))).toBe(false)
      expect(existsSync(join(dir, 'node_modules', '.pnpm', 'node_modules'))).toBe(false)
    })

    test('vitest run --pool=stereos: the suite passes in one VM', () => runsInOneVm(dir), 600_000)
  })
})
