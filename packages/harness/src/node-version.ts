/**
 * The Node a host needs to run the harness and the Vitest plugin (execa and Vitest 5 need 22.15+).
 * Imports nothing: the CLI and the plugin check the version with it *before* anything that loads
 * execa, which on an older Node dies at module load with `TEXT_ENCODINGS.union is not a function`.
 */
export const NODE_NEEDED = '22.15.0'

/** Why `version` cannot run `who`, with `fix`, or undefined when it can. */
export function nodeTooOld(version: string, who: string, fix: string, needed = NODE_NEEDED): string | undefined {
  const have = version.replace(/^v/, '').split('.').map(Number)
  const want = needed.split('.').map(Number)
  for (let i = 0; i < 3; i++) {
    if ((have[i] ?? 0) > (want[i] ?? 0)) return undefined
    if ((have[i] ?? 0) < (want[i] ?? 0))
      return `${who} needs Node ${needed} or newer; this is Node ${version.replace(/^v/, '')}\nFix: ${fix.replaceAll('NEEDED', needed)}`
  }
  return undefined
}
