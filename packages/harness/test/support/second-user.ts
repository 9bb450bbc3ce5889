import { execFileSync, spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { which } from '../../src/host/which.js'

/**
 * A second local user, created for one test and removed afterwards: the attacker of the
 * "other local users" tests. Needs root (useradd); `skipReason` says why not otherwise.
 */
export interface SecondUser {
  name: string
  uid: number
  gid: number
  /** Run `node -e script` as this user (no supplementary groups); its stdout, stderr and status. */
  node(script: string, args?: string[], timeoutMs?: number): { status: number | null; stdout: string; stderr: string }
  /** The same, left running (pipes on stdin, stdout, stderr). */
  spawnNode(script: string, args?: string[], env?: Record<string, string>): ChildProcessWithoutNullStreams
  remove(): void
}

export function secondUserSkipReason(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root to create a second local user with useradd'
  if (!which('useradd') || !which('userdel') || !which('setpriv')) return 'needs useradd, userdel and setpriv'
  return undefined
}

/** `firstId`: the lowest uid/gid the user may get (useradd's UID_MIN and GID_MIN). */
export function createSecondUser(options: { firstId?: number } = {}): SecondUser {
  const name = `stx${randomBytes(3).toString('hex')}`
  const range = options.firstId === undefined ? [] : ['-K', `UID_MIN=${options.firstId}`, '-K', `GID_MIN=${options.firstId}`]
  execFileSync('useradd', [...range, '--no-create-home', '--shell', '/usr/sbin/nologin', '--user-group', name])
  const uid = Number(execFileSync('id', ['-u', name], { encoding: 'utf8' }).trim())
  const gid = Number(execFileSync('id', ['-g', name], { encoding: 'utf8' }).trim())
  return {
    name,
    uid,
    gid,
    node(script, args = [], timeoutMs = 30_000) {
      const result = spawnSync(
        'setpriv',
        [`--reuid=${uid}`, `--regid=${gid}`, '--clear-groups', '--', process.execPath, '--input-type=module', '-e', script, ...args],
        {
          encoding: 'utf8',
          timeout: timeoutMs,
          cwd: '/',
          env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: '/' },
        },
      )
      return { status: result.status, stdout: result.stdout, stderr: result.stderr }
    },
    spawnNode(script, args = [], env = {}) {
      return spawn('setpriv', [`--reuid=${uid}`, `--regid=${gid}`, '--clear-groups', '--', process.execPath, '--input-type=module', '-e', script, ...args], {
        cwd: '/',
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: '/', ...env },
      })
    },
    remove() {
      spawnSync('userdel', [name])
    },
  }
}

/**
 * The attack itself, as a script for `SecondUser.node`: connect to each target (a TCP port on
 * 127.0.0.1 or a unix socket path), send stereosd's `inject_ssh_key` and report, per target,
 * what happened: `refused`/`denied`/`missing` (no connection), `silent` (connected, no answer)
 * or the first line the other end sent back. argv[1]: JSON array of targets.
 */
export const ATTACK_SCRIPT = `
import { connect } from 'node:net'
const targets = JSON.parse(process.argv[1])
const key = { user: 'admin', public_key: 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAttackerAttackerAttackerAttackerAttackerAtt attacker' }
const line = JSON.stringify({ type: 'inject_ssh_key', payload: key }) + '\\n'
const one = (target) => new Promise((resolve) => {
  const socket = typeof target === 'number' ? connect({ host: '127.0.0.1', port: target }) : connect({ path: target })
  let said = ''
  const done = (what) => { clearTimeout(timer); socket.destroy(); resolve(what) }
  const timer = setTimeout(() => done(said ? said.split('\\n')[0] : 'silent'), 3000)
  socket.on('connect', () => socket.write(line))
  // stereosd may push lifecycle lines first: wait for the ack.
  socket.on('data', (d) => { said += d; const ack = said.split('\\n').find((l) => l.includes('"ack"')); if (ack) done(ack) })
  socket.on('error', (err) => done(({ ECONNREFUSED: 'refused', EACCES: 'denied', EPERM: 'denied', ENOENT: 'missing' })[err.code] ?? err.code))
  socket.on('close', () => done(said ? said.split('\\n')[0] : 'closed'))
})
const results = {}
for (const target of targets) results[String(target)] = await one(target)
process.stdout.write(JSON.stringify(results))
`
