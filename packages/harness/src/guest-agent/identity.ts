import { existsSync, readFileSync } from 'node:fs'
import { userInfo } from 'node:os'
import { HarnessError } from '../errors.js'
import type { GuestUser, SpawnUser } from '../wire/messages.js'

/** Who a spawned process or a placed file belongs to; undefined = whoever the agent runs as. */
export interface Identity {
  uid: number
  gid: number
  /** The user's name; absent for a numeric identity the guest's /etc/passwd does not list. */
  name?: string
  home: string
}

function passwdEntry(match: (user: string, uid: number) => boolean): Identity | undefined {
  let text: string
  try {
    text = readFileSync('/etc/passwd', 'utf8')
  } catch {
    return undefined
  }
  for (const line of text.split('\n')) {
    const [user, , uid, gid, , home] = line.split(':')
    if (user && uid !== undefined && gid !== undefined && match(user, Number(uid))) return { name: user, uid: Number(uid), gid: Number(gid), home: home || '/' }
  }
  return undefined
}

/** Whether the agent can act as root (it was started through SSH + sudo, not by agentd). */
export function agentIsRoot(): boolean {
  return process.getuid?.() === 0
}

export function agentUserName(): string {
  return userInfo().username
}

/**
 * The identity to switch to for `user`. An agent started by agentd runs as `agent` and has no
 * way to root (stereOS denies `agent` sudo); an agent started as root drops to `agent` unless
 * root is asked for. (`defaultUser` is `agent` in every stereOS guest; agent --default-user changes it.)
 */
export function identityFor(user: SpawnUser | undefined, defaultUser = 'agent'): Identity | undefined {
  if (typeof user === 'object') return numericIdentity(user.uid, user.gid)
  return namedIdentity(user, defaultUser)
}

/**
 * A uid/gid given by number (the wire refuses uid 0). The name and home come from /etc/passwd when
 * it lists the uid (home `/` otherwise, or when it does not exist); the group is the one asked for.
 */
function numericIdentity(uid: number, gid: number): Identity | undefined {
  if (!agentIsRoot()) {
    if (process.getuid?.() === uid && process.getgid?.() === gid) return undefined
    throw new HarnessError('AGENT', `uid ${uid}/gid ${gid} was requested, but the guest agent runs as ${agentUserName()} and cannot switch users`, {
      fix: "boot with bootstrap: 'ssh' (the agent then runs as root through admin's sudo)",
    })
  }
  const entry = passwdEntry((_, id) => id === uid)
  // nobody's home, for one, is /nonexistent: a default cwd there would fail the spawn.
  const home = entry && existsSync(entry.home) ? entry.home : '/'
  return { uid, gid, home, ...(entry?.name ? { name: entry.name } : {}) }
}

function namedIdentity(user: GuestUser | undefined, defaultUser: string): Identity | undefined {
  if (user === 'root') {
    if (agentIsRoot()) return undefined
    throw new HarnessError(
      'AGENT',
      `user 'root' was requested, but the guest agent runs as ${agentUserName()}: agentd starts it as \`agent\`, which stereOS denies sudo`,
      {
        fix: "boot with bootstrap: 'ssh' (the agent then runs as root through admin's sudo) or drop user: 'root'",
      },
    )
  }
  if (!agentIsRoot() || defaultUser === 'root') return undefined
  const entry = passwdEntry((name) => name === defaultUser)
  if (!entry)
    throw new HarnessError('AGENT', `the guest has no \`${defaultUser}\` user in /etc/passwd`, {
      fix: "pass user: 'root', or use a stereOS mixtape (they all have the agent user)",
    })
  return entry
}
