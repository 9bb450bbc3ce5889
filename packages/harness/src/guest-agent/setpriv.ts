import { realpathSync, statSync } from 'node:fs'
import { delimiter, dirname, join } from 'node:path'
import { HarnessError } from '../errors.js'

/** NixOS (every real stereOS guest) keeps system programs here, whatever PATH the agent got. */
const NIXOS_SYSTEM_BIN = '/run/current-system/sw/bin'

let found: string | undefined

/** Owned by root and writable by nobody else: a setpriv a test user could have planted is no setpriv. */
function trusted(path: string): boolean {
  try {
    const real = realpathSync(path)
    const file = statSync(real)
    const dir = statSync(dirname(real))
    return file.isFile() && (file.mode & 0o111) !== 0 && [file, dir].every((s) => s.uid === 0 && (s.mode & 0o022) === 0)
  } catch {
    return false
  }
}

/**
 * The guest's `setpriv` (util-linux on NixOS, busybox's applet in the fixture guest; both take
 * `--no-new-privs -- <cmd> <args>`), searched on the agent's PATH and then in NixOS's system bin.
 */
export function setprivPath(): string {
  if (found) return found
  const dirs = [...(process.env.PATH ?? '').split(delimiter).filter((dir) => dir.startsWith('/')), NIXOS_SYSTEM_BIN]
  for (const dir of dirs) {
    const candidate = join(dir, 'setpriv')
    if (trusted(candidate)) {
      found = candidate
      return candidate
    }
  }
  throw new HarnessError('AGENT', `noNewPrivs needs \`setpriv\` in the guest, and none owned by root was found in ${dirs.join(', ')}`, {
    fix: 'add util-linux (or busybox with its setpriv applet) to the guest image, or spawn without noNewPrivs',
  })
}
