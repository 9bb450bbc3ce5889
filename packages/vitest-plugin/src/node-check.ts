/**
 * The Node version check, evaluated before anything else of this package (index.ts imports it
 * first): @stereos/harness loads execa at module load, which on an older Node dies with
 * `TEXT_ENCODINGS.union is not a function` and names nothing the user can act on. The harness's
 * `node-version` entry imports nothing, so it is safe to load first.
 */
import { nodeTooOld as check } from '@stereos/harness/node-version'

/** Why `version` cannot run this package, or undefined when it can. */
export function nodeTooOld(version: string): string | undefined {
  return check(version, '@stereos/vitest-plugin', 'run vitest with Node >= NEEDED (e.g. `nvm install 22`, or actions/setup-node with node-version: 22)')
}

const problem = nodeTooOld(process.versions.node)
if (problem) throw new Error(problem)
