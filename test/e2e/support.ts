import { execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, relative } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { promisify } from 'node:util'
import type { Arch } from '@stereos/harness'

export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..')

interface FixtureBuilder {
  buildFixture(options: { arch: Arch; log?: (line: string) => void }): Promise<{ dir: string }>
}

/** The fixture guest for `arch` (built by `npm run fixtures`; built here when missing). */
export async function fixtureDir(arch: Arch): Promise<string> {
  const builder = (await import(pathToFileURL(join(repoRoot, 'fixtures', 'guest', 'build.mjs')).href)) as FixtureBuilder
  return (await builder.buildFixture({ arch })).dir
}

/**
 * A mixtape dir that is the fixture with some files replaced: the rest are symlinks to the
 * fixture's, so nothing large is copied.
 */
export async function derivedMixtape(arch: Arch, replace: Record<string, string | Buffer>): Promise<string> {
  const source = await fixtureDir(arch)
  const dir = mkdtempSync(join(tmpdir(), `sh-mixtape-${arch}-`))
  for (const name of readdirSync(source)) {
    if (name.startsWith('.')) continue
    if (name in replace) writeFileSync(join(dir, name), replace[name]!)
    else symlinkSync(join(source, name), join(dir, name))
  }
  return dir
}

export function fixtureCmdline(dir: string): string {
  return readFileSync(join(dir, 'cmdline'), 'utf8').trim()
}

/** A private runtime dir per test file, so assertions about VM dirs see only our own. */
export function runtimeDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'sh-e2e-runtime-'))
  mkdirSync(join(dir, 'vms'))
  return dir
}

export function vmDirs(runtime: string): string[] {
  const vms = join(runtime, 'vms')
  return existsSync(vms) ? readdirSync(vms) : []
}

/** Poll for a file the guest writes into a shared dir. */
export async function waitForFile(path: string, timeoutMs: number): Promise<string> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (existsSync(path)) return readFileSync(path, 'utf8')
    await new Promise((resolve) => setTimeout(resolve, 250))
  }
  throw new Error(`${path} did not appear within ${timeoutMs} ms`)
}

export function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

export interface CommandResult {
  code: number
  /** stdout and stderr, in that order. */
  output: string
  stdout: string
}

const execFileAsync = promisify(execFile)

/** Runs a command to its end (10 min at most); a non-zero exit is a result the test reads, only a failure to run it throws. */
export async function runCommand(file: string, args: string[], options: { cwd: string; env: NodeJS.ProcessEnv }): Promise<CommandResult> {
  try {
    const { stdout, stderr } = await execFileAsync(file, args, { ...options, maxBuffer: 64 * 1024 * 1024, timeout: 600_000 })
    return { code: 0, output: stdout + stderr, stdout }
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string }
    if (typeof e.code !== 'number') throw err
    return { code: e.code, output: `${e.stdout ?? ''}${e.stderr ?? ''}`, stdout: e.stdout ?? '' }
  }
}

/** The repo's Vitest CLI. */
export const VITEST_CLI = join(repoRoot, 'node_modules', 'vitest', 'vitest.mjs')

/** A vitest CLI (`cli`: its vitest.mjs) as a user runs it, with a runtime dir of this run's and no colour. */
export function vitestCli(cwd: string, args: string[], env: Record<string, string> = {}, cli = VITEST_CLI): Promise<CommandResult> {
  return runCommand(process.execPath, [cli, ...args], { cwd, env: { ...process.env, ...env, STEREOS_RUNTIME_DIR: runtimeDir(), NO_COLOR: '1' } })
}

/** Every path, link target and file content under `dir`, hashed (Vitest's own output dirs aside). */
export function treeHash(dir: string, skip: string[]): string {
  const h = createHash('sha256')
  const walk = (at: string) => {
    for (const name of readdirSync(at).sort()) {
      const path = join(at, name)
      const rel = relative(dir, path)
      if (skip.includes(rel)) continue
      const stat = lstatSync(path)
      h.update(`${rel}\0${stat.mode}\0`)
      if (stat.isSymbolicLink()) h.update(readlinkSync(path))
      else if (stat.isDirectory()) walk(path)
      else h.update(readFileSync(path))
    }
  }
  walk(dir)
  return h.digest('hex')
}
