import { readFileSync } from 'node:fs'
import { userInfo } from 'node:os'
import { HarnessError } from '../errors.js'
import type { GuestUser } from '../wire/messages.js'

/** Who a spawned process or a placed file belongs to; undefined = whoever the agent runs as. */
export interface Identity {
  uid: number
  gid: number
  name: string
  home: string
}

function passwdEntry(name: string): Identity | undefined {
  let text: string
  try {
    text = readFileSync('/etc/passwd', 'utf8')
  } catch {
    return undefined
  }
  for (const line of text.split('\n')) {
    const [user, , uid, gid, , home] = line.split(':')
    if (user === name && uid !== undefined && gid !== undefined) return { name, uid: Number(uid), gid: Number(gid), home: home || '/' }
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
export function identityFor(user: GuestUser | undefined, defaultUser = 'agent'): Identity | undefined {
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
  const entry = passwdEntry(defaultUser)
  if (!entry)
    throw new HarnessError('AGENT', `the guest has no \`${defaultUser}\` user in /etc/passwd`, {
      fix: "pass user: 'root', or use a stereOS mixtape (they all have the agent user)",
    })
  return entry
}
