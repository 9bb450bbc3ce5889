import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
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
