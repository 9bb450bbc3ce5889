import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process'
import { homedir } from 'node:os'
import type { Duplex, Readable, Writable } from 'node:stream'
import { HarnessError } from '../errors.js'
import type { OpArgs } from '../wire/messages.js'
import { TOKEN_SECRET } from '../wire/messages.js'
import type { WirePeer } from '../wire/peer.js'
import type { Identity } from './identity.js'

type SpawnArgs = OpArgs<'spawn'>

/** The environment a guest process starts from: the agent's, minus its token, with the target user's HOME/USER. */
function baseEnv(identity: Identity | undefined): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env }
  delete env[TOKEN_SECRET]
  env.PATH ??= '/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin'
  if (identity) {
    env.HOME = identity.home
    env.USER = identity.name
    env.LOGNAME = identity.name
  }
  return env
}

/**
 * The processes one host connection started. Each runs in its own process group, so kill
 * reaches a shell's children too; when the connection goes, they all get SIGKILL.
 */
export class ProcessTable {
  private readonly children = new Map<number, ChildProcess>()

  async spawn(peer: WirePeer, args: SpawnArgs, identity: Identity | undefined): Promise<{ pid: number }> {
    if (this.children.has(args.ref)) throw new HarnessError('AGENT', `process ref ${args.ref} is already in use`)
    const stdio: StdioOptions = [args.stdin ? 'pipe' : 'ignore', args.stdout ? 'pipe' : 'ignore', args.stderr ? 'pipe' : 'ignore']
    if (args.ipc) stdio.push('pipe')
    const child = spawn(args.cmd, args.args, {
      stdio,
      detached: true,
      env: { ...baseEnv(identity), ...args.env },
      cwd: args.cwd ?? identity?.home ?? homedir(),
      ...(identity ? { uid: identity.uid, gid: identity.gid } : {}),
    })
    await new Promise<void>((resolve, reject) => {
      child.once('spawn', resolve)
      child.once('error', (err: NodeJS.ErrnoException) => {
        const why = err.code === 'ENOENT' ? (args.cwd ? `${args.cmd} or the cwd ${args.cwd} does not exist` : `${args.cmd} was not found on PATH`) : err.message
        reject(new HarnessError('AGENT', `cannot start ${args.cmd}: ${why}`, { cause: err }))
      })
    }).catch((err: unknown) => {
      for (const id of [args.stdin, args.stdout, args.stderr, args.ipc]) if (id) peer.channel(id).destroy()
      throw err
    })
    const pid = child.pid as number
    this.children.set(args.ref, child)
    if (args.stdin) wire(peer.channel(args.stdin).readOnly(), child.stdin as Writable)
    if (args.stdout) wire(child.stdout as Readable, peer.channel(args.stdout))
    if (args.stderr) wire(child.stderr as Readable, peer.channel(args.stderr))
    if (args.ipc) {
      const ipc = child.stdio[3] as Duplex
      const channel = peer.channel(args.ipc)
      wire(channel, ipc)
      wire(ipc, channel)
    }
    child.once('close', (code, signal) => {
      this.children.delete(args.ref)
      peer.event('exit', { ref: args.ref, code, signal })
    })
    return { pid }
  }

  kill(ref: number, signal: string): void {
    const child = this.children.get(ref)
    if (!child?.pid) throw new HarnessError('AGENT', `no running process with ref ${ref}`)
    try {
      process.kill(-child.pid, signal as NodeJS.Signals)
    } catch {
      child.kill(signal as NodeJS.Signals)
    }
  }

  /** The host went away: nothing it started may outlive its connection. */
  killAll(): void {
    for (const child of this.children.values()) {
      try {
        if (child.pid) process.kill(-child.pid, 'SIGKILL')
      } catch {
        child.kill('SIGKILL')
      }
    }
  }
}

/** pipe() without letting one side's error crash the agent: an error ends the other side. */
function wire(from: Readable, to: Writable): void {
  from.on('error', () => to.destroy())
  to.on('error', () => from.destroy())
  from.pipe(to)
}
