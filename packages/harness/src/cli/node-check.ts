/**
 * The CLI's Node version check, evaluated before the rest of the CLI (main.ts imports it first):
 * on an older Node, execa dies at module load with `TEXT_ENCODINGS.union is not a function`.
 * It imports only node-version.ts, which imports nothing.
 */
import { nodeTooOld as check } from '../node-version.js'

/** Why `version` cannot run the CLI, or undefined when it can. */
export function nodeTooOld(version: string): string | undefined {
  return check(version, 'stereos-harness', 'run it with Node >= NEEDED (e.g. `nvm install 22`)')
}

const problem = nodeTooOld(process.versions.node)
if (problem) {
  process.stderr.write(`${problem}\n`)
  process.exit(1)
}
