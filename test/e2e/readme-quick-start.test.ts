import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, relative } from 'node:path'
import type { Arch } from '@stereos/harness'
import { afterAll, describe, expect, test } from 'vitest'
import { npmTarballOverrides, packedEnv, packWorkspaces, repoVitestVersion } from './packed.js'
import { fixtureDir, repoRoot, runCommand, runtimeDir } from './support.js'

const arch: Arch = process.arch === 'arm64' ? 'aarch64' : 'x86_64'

interface QuickStart {
  /** The set-up commands, one a line. */
  shell: string[]
  /** Files by path, as the README prints them (the first line, `// <path>`, names the file). */
  files: Record<string, string>
  /** The run command. */
  run: string
}

/**
 * The README's quick start, from the fenced blocks that follow its `<!-- quick-start: KIND -->`
 * markers. Throws when a marker is missing, repeated or not followed by a block, so the test fails
 * when the README and this test drift apart.
 */
function readQuickStart(readme: string): QuickStart {
  const blocks = [...readme.matchAll(/<!-- quick-start: (\w+) -->\n```\w*\n([\s\S]*?)```\n/g)].map(([, kind, body]) => ({ kind: kind!, body: body! }))
  const markers = readme.match(/<!-- quick-start: /g)?.length ?? 0
  if (markers !== blocks.length) throw new Error(`README: ${markers} quick-start markers, but only ${blocks.length} are followed by a fenced block`)
  const only = (kind: string) => {
    const found = blocks.filter((b) => b.kind === kind)
    if (found.length !== 1) throw new Error(`README: expected one <!-- quick-start: ${kind} --> block, found ${found.length}`)
    return found[0]!.body
  }
  const lines = (body: string) =>
    body
      .split('\n')
      .map((l) => l.replace(/\s+#.*$/, '').trim())
      .filter(Boolean)
  const files: Record<string, string> = {}
  for (const { body } of blocks.filter((b) => b.kind === 'file')) {
    const path = /^\/\/ (\S+)\n/.exec(body)?.[1]
    if (!path) throw new Error(`README: a quick-start file block does not start with "// <path>":\n${body}`)
    files[path] = body
  }
  const run = lines(only('run'))
  if (run.length !== 1) throw new Error(`README: the quick-start run block should hold one command, not ${run.length}`)
  return { shell: lines(only('shell')), files, run: run[0]! }
}

/**
 * #20: the README's quick start, followed word for word in a fresh project outside the repo.
 * Every command and file is the README's, with two stand-ins for what needs the network: the
 * `npm install` of our unpublished packages installs their packed tarballs instead (and the
 * Vitest this repo pins, from npm's cache), and `stereos-harness pull <ref>` is replaced by what
 * it leaves behind, the mixtape in mb's cache (`$MB_CONFIG_DIR/mixtapes/<name>/latest`, here the
 * fixture guest's files, linked). The config's `mixtape` reference is then resolved from that
 * cache exactly as after a real pull: nothing in the config or the test file is rewritten.
 */
describe('the README quick start, word for word in a fresh project outside the repo', () => {
  const root = realpathSync(mkdtempSync(join(tmpdir(), 'sh-quick-start-')))
  const project = join(root, 'project')
  const mbConfig = join(root, 'mb')
  afterAll(() => rmSync(root, { recursive: true, force: true }))
  const env: NodeJS.ProcessEnv = {
    ...packedEnv,
    MB_CONFIG_DIR: mbConfig,
    STEREOS_RUNTIME_DIR: runtimeDir(),
    // Templates on (the README's default), whatever the caller's environment says.
    STEREOS_TEMPLATE: 'auto',
  }
  delete env.STEREOS_SANDBOX
  const sh = (line: string) => runCommand('sh', ['-c', line], { cwd: project, env })

  test('the README has the quick-start blocks: set-up, a config, a test file and the run command', () => {
    const qs = readQuickStart(readFileSync(join(repoRoot, 'README.md'), 'utf8'))
    expect(Object.keys(qs.files).sort()).toEqual(['test/guest.test.ts', 'vitest.config.ts'])
    expect(qs.run).toMatch(/^npx vitest run --pool=stereos$/)
  })

  test('a missing marker fails the extraction', () => {
    const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8')
    expect(() => readQuickStart(readme.replace('<!-- quick-start: run -->\n', ''))).toThrow(/expected one <!-- quick-start: run --> block, found 0/)
    expect(() => readQuickStart(readme.replace('<!-- quick-start: shell -->\n```sh', '<!-- quick-start: shell -->\n\n```sh'))).toThrow(/markers/)
  })

  test('passes, with its guest-side assertion run in a VM', async () => {
    const qs = readQuickStart(readFileSync(join(repoRoot, 'README.md'), 'utf8'))
    mkdirSync(project)
    expect(relative(repoRoot, project).startsWith('..')).toBe(true)
    const tarballs = await packWorkspaces(root)

    const pulled: string[] = []
    for (const line of qs.shell) {
      const install = /^npm install -D ((?:\S+ ?)+)$/.exec(line)
      const pull = /^npx stereos-harness pull (\S+)$/.exec(line)
      if (install) {
        // Stand-in 1: the same packages, ours from their tarballs (and the unpublished @stereos/vsock they need).
        const names = install[1]!.split(' ')
        const devDependencies: Record<string, string> = { '@stereos/vsock': `file:${tarballs['@stereos/vsock']}` }
        for (const name of names) {
          if (name === 'vitest') devDependencies[name] = repoVitestVersion
          else if (tarballs[name]) devDependencies[name] = `file:${tarballs[name]}`
          else throw new Error(`the README's install line names ${name}, which this test cannot install offline`)
        }
        expect(names.sort()).toEqual(['@stereos/harness', '@stereos/vitest-plugin', 'vitest'])
        const manifestPath = join(project, 'package.json')
        const manifest = JSON.parse(readFileSync(manifestPath, 'utf8')) as Record<string, unknown>
        writeFileSync(manifestPath, JSON.stringify({ ...manifest, devDependencies, overrides: npmTarballOverrides }, null, 2))
        const result = await sh('npm install --no-package-lock --no-audit --no-fund --prefer-offline')
        expect(result.code, result.output).toBe(0)
        // The CLI the pull line runs is there.
        expect(existsSync(join(project, 'node_modules', '.bin', 'stereos-harness'))).toBe(true)
      } else if (pull) {
        // Stand-in 2: what the pull leaves in mb's cache (no .stereos-harness.json: as `mb pull` leaves it).
        const ref = pull[1]!
        expect(ref, 'a bare name; this stand-in caches it as <name>/latest').toMatch(/^[a-z0-9-]+$/)
        const tagDir = join(mbConfig, 'mixtapes', ref, 'latest')
        mkdirSync(tagDir, { recursive: true })
        const fixture = await fixtureDir(arch)
        for (const name of readdirSync(fixture).filter((n) => !n.startsWith('.'))) symlinkSync(join(fixture, name), join(tagDir, name))
        pulled.push(ref)
      } else {
        const result = await sh(line)
        expect(result.code, `${line}\n${result.output}`).toBe(0)
      }
    }
    expect(pulled).toHaveLength(1)
    // The config names what was pulled, so the run resolves it from the cache, not the registry.
    expect(qs.files['vitest.config.ts']).toContain(`mixtape: '${pulled[0]}'`)

    for (const [path, body] of Object.entries(qs.files)) {
      mkdirSync(dirname(join(project, path)), { recursive: true })
      writeFileSync(join(project, path), body)
    }
    const { code, output } = await sh(qs.run)
    // Passed, not skipped: describe.sandbox skips outside the pool, and STEREOS_SANDBOX is only the guest's.
    expect(output).toMatch(/Test Files\s+1 passed \(1\)/)
    expect(output).toMatch(/Tests\s+1 passed \(1\)/)
    expect(output).toContain('1 test file(s) ran in 1 VM boot(s)')
    expect(code, output).toBe(0)
  }, 900_000)
})
