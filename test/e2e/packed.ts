import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { repoRoot, runCommand } from './support.js'

/** This repo's Node 24 first on PATH (npm runs under it): what a user's CI would have; no fixture builder. */
export const packedEnv: NodeJS.ProcessEnv = { ...process.env, PATH: `${dirname(process.execPath)}:${process.env.PATH}`, NO_COLOR: '1' }
delete packedEnv.STEREOS_FIXTURE_BUILDER

/** The Vitest this repo tests with: installs outside the repo pin it (npm's cache has it). */
export const repoVitestVersion = (JSON.parse(readFileSync(join(repoRoot, 'node_modules', 'vitest', 'package.json'), 'utf8')) as { version: string }).version

/**
 * npm `overrides` that make the plugin's and the harness's `^0.1.0` resolve to the tarballs named
 * in devDependencies, not the registry (`@stereos/vsock` is not published).
 */
export const npmTarballOverrides = { '@stereos/harness': '$@stereos/harness', '@stereos/vsock': '$@stereos/vsock' }

const PACKAGES = ['@stereos/harness', '@stereos/vitest-plugin', '@stereos/vsock']

/** `npm pack` the three workspaces into `dest`: the tarball's absolute path by package name. */
export async function packWorkspaces(dest: string): Promise<Record<string, string>> {
  const npm = await runCommand(
    'npm',
    ['pack', '-w', 'native', '-w', 'packages/harness', '-w', 'packages/vitest-plugin', '--pack-destination', dest, '--json'],
    { cwd: repoRoot, env: packedEnv },
  )
  if (npm.code !== 0) throw new Error(`npm pack failed:\n${npm.output}`)
  const packed = JSON.parse(npm.stdout) as { name: string; filename: string }[]
  const tarballs = Object.fromEntries(packed.map((p) => [p.name, join(dest, p.filename)]))
  const missing = PACKAGES.filter((name) => !tarballs[name])
  if (missing.length > 0) throw new Error(`npm pack made no tarball for ${missing.join(', ')}:\n${npm.output}`)
  return tarballs
}
