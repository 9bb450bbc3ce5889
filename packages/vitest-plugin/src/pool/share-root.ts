import { realpathSync } from 'node:fs'
import { dirname, parse, sep } from 'node:path'
import { fileURLToPath } from 'node:url'
import { HarnessError } from '@stereos/harness'

/** stereosd refuses mounts at or under these (STEREOS-FACTS §1.10). */
const BLOCKED = ['/nix', '/etc', '/bin', '/boot', '/dev', '/proc', '/sys', '/run']

function commonAncestor(paths: string[]): string {
  const split = paths.map((p) => p.split(sep))
  const first = split[0] ?? []
  let n = 0
  while (n < first.length && split.every((parts) => parts[n] === first[n])) n++
  return first.slice(0, n).join(sep) || sep
}

/**
 * The host directory shared read-only into the guest at the same absolute path: it must hold
 * the project root, the Vitest the host runs (the guest imports `distPath` itself: two copies
 * of Vitest break "current suite" tracking) and this plugin (the guest entry).
 */
export function shareRoot(projectRoot: string, distPath: string): string {
  const here = dirname(fileURLToPath(import.meta.url))
  const paths = [projectRoot, distPath, here].map((p) => realpathSync(p))
  const root = commonAncestor(paths)
  if (root === parse(root).root) {
    throw new HarnessError('INVALID_OPTIONS', `the project (${paths[0]}), Vitest (${paths[1]}) and @stereos/vitest-plugin (${paths[2]}) share no directory but /`, {
      fix: 'install vitest and @stereos/vitest-plugin in the project (node_modules under its root): the guest sees them through one read-only share',
    })
  }
  const blocked = BLOCKED.find((b) => root === b || root.startsWith(`${b}/`))
  if (blocked) {
    throw new HarnessError('INVALID_OPTIONS', `the project lives under ${blocked} (${root}), where stereosd refuses to mount a share`, { fix: 'move the project elsewhere (e.g. under /home or /work)' })
  }
  return root
}
