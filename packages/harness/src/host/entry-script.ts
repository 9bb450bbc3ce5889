import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { HarnessError } from '../errors.js'

/** This package's directory (this file is src/host/ or dist/host/ in it). */
const packageDir = join(dirname(fileURLToPath(import.meta.url)), '..', '..')

/**
 * A module of this package that runs as a process of its own (`node <file> …`), named by its
 * path under src/ without extension (`vmm/log-cap-main`): dist/<path>.js when built (also when
 * this code runs from src/ under Vitest), else src/<path>.ts, which Node runs by stripping types.
 */
export function entryScript(path: string): string {
  const candidates = [join(packageDir, 'dist', `${path}.js`), join(packageDir, 'src', `${path}.ts`)]
  const found = candidates.find((file) => existsSync(file))
  if (!found) {
    throw new HarnessError('HOST', `the harness's ${path} script is missing (looked for ${candidates.join(', ')})`, {
      fix: 'build the harness (npm run build, or tsc -b)',
    })
  }
  return found
}
