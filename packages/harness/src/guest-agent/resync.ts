import { type ChildProcess, spawn } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { HarnessError } from '../errors.js'
import type { OpArgs, OpResult } from '../wire/messages.js'
import { agentIsRoot } from './identity.js'

/**
 * `date -u -s @N`, waiting for N on stdin. An agent started in a template starts this before the
 * save, so the restored guest only has to exec `date`: spawning from Node is the slowest thing a
 * freshly restored guest does under TCG (its translated code is not in the saved state).
 */
let waitingDate: ChildProcess | undefined

export function prepareResync(): void {
  if (!agentIsRoot() || waitingDate) return
  const child = spawn('/bin/sh', ['-c', 'IFS= read -r t && exec date -u -s "@$t" >/dev/null'], { stdio: ['pipe', 'ignore', 'pipe'] })
  child.on('error', () => undefined)
  waitingDate = child
}

function setClock(seconds: number): Promise<void> {
  const child = waitingDate ?? spawn('date', ['-u', '-s', `@${seconds}`], { stdio: ['pipe', 'ignore', 'pipe'] })
  const waited = waitingDate !== undefined
  waitingDate = undefined
  let stderr = ''
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()))
  const done = new Promise<void>((resolve, reject) => {
    child.once('error', reject)
    child.once('close', (code) => (code === 0 ? resolve() : reject(new Error(`date exited ${code}: ${stderr.trim()}`))))
  })
  child.stdin?.end(waited ? `${seconds}\n` : undefined)
  return done
}

/**
 * A guest restored from a template wakes with the template's clock (seconds to days behind) and
 * the template's random pool, the same in every clone. A root agent steps the clock to the host's
 * and mixes the host's randomness into the pool; an agent without root says why it could not.
 */
export async function resync({ epochMs, entropy }: OpArgs<'resync'>): Promise<OpResult<'resync'>> {
  if (!agentIsRoot()) return { clockSet: false, reason: 'the agent does not run as root' }
  if (!/^[0-9a-f]*$/.test(entropy)) throw new HarnessError('PROTOCOL', 'resync: entropy must be hex')
  // Whole seconds: `date -s @N` is what coreutils and busybox both take.
  const clock = setClock(Math.round(epochMs / 1000))
  // Writing to /dev/urandom mixes without crediting: it cannot make the pool worse. (Sync: 64
  // bytes, and no first use of libuv's thread pool in a guest that was just restored.)
  writeFileSync('/dev/urandom', Buffer.from(entropy, 'hex'))
  await clock
  return { clockSet: true }
}
