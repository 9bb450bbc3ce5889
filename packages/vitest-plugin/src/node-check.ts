/**
 * The Node version check, evaluated before anything else of this package (index.ts imports it
 * first): @stereos/harness loads execa at module load, which on an older Node dies with
 * `TEXT_ENCODINGS.union is not a function` and names nothing the user can act on.
 */
const NODE_NEEDED = '22.15.0'

/** Why `version` cannot run this package, or undefined when it can. */
export function nodeTooOld(version: string, needed = NODE_NEEDED): string | undefined {
  const have = version.replace(/^v/, '').split('.').map(Number)
  const want = needed.split('.').map(Number)
  for (let i = 0; i < 3; i++) {
    if ((have[i] ?? 0) > (want[i] ?? 0)) return undefined
    if ((have[i] ?? 0) < (want[i] ?? 0))
      return `@stereos/vitest-plugin needs Node ${needed} or newer; this is Node ${version.replace(/^v/, '')}\nFix: run vitest with Node >= ${needed} (e.g. \`nvm install 22\`, or actions/setup-node with node-version: 22)`
  }
  return undefined
}

const problem = nodeTooOld(process.versions.node)
if (problem) throw new Error(problem)
