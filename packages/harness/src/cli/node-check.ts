/**
 * The CLI's Node version check, evaluated before the rest of the CLI (main.ts imports it first):
 * on an older Node, execa dies at module load with `TEXT_ENCODINGS.union is not a function`.
 * Self-contained on purpose: importing anything of the harness here would load execa first.
 */
const NODE_NEEDED = '22.15.0'

/** Why `version` cannot run the CLI, or undefined when it can. */
export function nodeTooOld(version: string, needed = NODE_NEEDED): string | undefined {
  const have = version.replace(/^v/, '').split('.').map(Number)
  const want = needed.split('.').map(Number)
  for (let i = 0; i < 3; i++) {
    if ((have[i] ?? 0) > (want[i] ?? 0)) return undefined
    if ((have[i] ?? 0) < (want[i] ?? 0))
      return `stereos-harness needs Node ${needed} or newer; this is Node ${version.replace(/^v/, '')}\nFix: run it with Node >= ${needed} (e.g. \`nvm install 22\`)`
  }
  return undefined
}

const problem = nodeTooOld(process.versions.node)
if (problem) {
  process.stderr.write(`${problem}\n`)
  process.exit(1)
}
