import { realpathSync, statSync } from 'node:fs'
import { delimiter, dirname, join } from 'node:path'
import { HarnessError } from '../errors.js'

/** NixOS (every real stereOS guest) keeps system programs here, whatever PATH the agent got. */
const NIXOS_SYSTEM_BIN = '/run/current-system/sw/bin'

const found = new Map<string, string>()

/** Owned by root and writable by nobody else: a program a test user could have planted is not the system's. */
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

/** `name` on the agent's PATH or in NixOS's system bin, owned by root and writable by nobody else. */
function systemProgram(name: string): { path: string } | { searched: string[] } {
  const cached = found.get(name)
  if (cached) return { path: cached }
  const dirs = [...(process.env.PATH ?? '').split(delimiter).filter((dir) => dir.startsWith('/')), NIXOS_SYSTEM_BIN]
  for (const dir of dirs) {
    const candidate = join(dir, name)
    if (trusted(candidate)) {
      found.set(name, candidate)
      return { path: candidate }
    }
  }
  return { searched: dirs }
}

/**
 * The guest's `setpriv` (util-linux on NixOS, busybox's applet in the fixture guest; both take
 * `--no-new-privs -- <cmd> <args>`), searched on the agent's PATH and then in NixOS's system bin.
 */
export function setprivPath(): string {
  const program = systemProgram('setpriv')
  if ('path' in program) return program.path
  throw new HarnessError('AGENT', `noNewPrivs needs \`setpriv\` in the guest, and none owned by root was found in ${program.searched.join(', ')}`, {
    fix: 'add util-linux (or busybox with its setpriv applet) to the guest image, or spawn without noNewPrivs',
  })
}

/** The guest's `sh` (bash as sh on NixOS, which reads no startup files then; busybox ash in the fixture). */
export function shellPath(): string {
  const program = systemProgram('sh')
  if ('path' in program) return program.path
  throw new HarnessError('AGENT', `a worker process starts through \`sh\`, and none owned by root was found in ${program.searched.join(', ')}`, {
    fix: 'use a guest image with a POSIX sh (every stereOS mixtape has one)',
  })
}
