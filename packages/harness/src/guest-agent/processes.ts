import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process'
import { existsSync, statSync } from 'node:fs'
import { homedir } from 'node:os'
import { delimiter, isAbsolute, join, resolve } from 'node:path'
import type { Duplex, Readable, Writable } from 'node:stream'
import { HarnessError } from '../errors.js'
import type { OpArgs } from '../wire/messages.js'
import { TOKEN_SECRET } from '../wire/messages.js'
import type { WirePeer } from '../wire/peer.js'
import type { Identity } from './identity.js'
import { setNice } from './priority.js'
import { setprivPath } from './setpriv.js'

type SpawnArgs = OpArgs<'spawn'>

/** The environment a guest process starts from: the agent's, minus its token, with the target user's HOME/USER. */
function baseEnv(identity: Identity | undefined): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env }
  delete env[TOKEN_SECRET]
  env.PATH ??= '/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin'
  if (identity) {
    env.HOME = identity.home
    if (identity.name) {
      env.USER = identity.name
      env.LOGNAME = identity.name
    } else {
      delete env.USER
      delete env.LOGNAME
    }
  }
  return env
}

/**
 * The file `cmd` names, looked up as the process would (its PATH, its cwd): behind setpriv, a
 * missing command would otherwise be an exit code, not the error spawn gives.
 */
function resolveCommand(cmd: string, path: string | undefined, cwd: string): string {
  if (cmd.includes('/')) {
    const file = isAbsolute(cmd) ? cmd : resolve(cwd, cmd)
    if (existsSync(file)) return file
    throw new HarnessError('AGENT', `cannot start ${cmd}: it does not exist`)
  }
  for (const dir of (path ?? '').split(delimiter)) {
    const file = join(dir ? resolve(cwd, dir) : cwd, cmd)
    try {
      if (statSync(file).isFile()) return file
    } catch {
      // not in this directory
    }
  }
  throw new HarnessError('AGENT', `cannot start ${cmd}: ${cmd} was not found on PATH`)
}

/** Start the process (through setpriv for noNewPrivs) at its nice value; rejects if it did not start. */
async function start(args: SpawnArgs, identity: Identity | undefined): Promise<ChildProcess> {
  const stdio: StdioOptions = [args.stdin ? 'pipe' : 'ignore', args.stdout ? 'pipe' : 'ignore', args.stderr ? 'pipe' : 'ignore']
  if (args.ipc) stdio.push('pipe')
  const env = { ...baseEnv(identity), ...args.env }
  const cwd = args.cwd ?? identity?.home ?? homedir()
  // With no_new_privs set (setpriv sets it, then execs), no setuid program or file capability can
  // give the process more than it starts with. Node's uid/gid make libuv call setgroups(0, NULL)
  // first: no supplementary groups either.
  const [file, argv] = args.noNewPrivs
    ? [setprivPath(), ['--no-new-privs', '--', resolveCommand(args.cmd, env.PATH, cwd), ...args.args]]
    : [args.cmd, args.args]
  const child = spawn(file, argv, {
    stdio,
    detached: true,
    env,
    cwd,
    ...(identity ? { uid: identity.uid, gid: identity.gid } : {}),
  })
  await new Promise<void>((resolve, reject) => {
    child.once('spawn', resolve)
    child.once('error', (err: NodeJS.ErrnoException) => {
      const why = err.code === 'ENOENT' ? (args.cwd ? `${args.cmd} or the cwd ${args.cwd} does not exist` : `${args.cmd} was not found on PATH`) : err.message
      reject(new HarnessError('AGENT', `cannot start ${args.cmd}: ${why}`, { cause: err }))
    })
  })
  if (args.nice !== undefined) {
    try {
      setNice(child.pid as number, args.nice)
    } catch (err) {
      child.kill('SIGKILL')
      throw new HarnessError('AGENT', `cannot set the nice value of ${args.cmd} to ${args.nice}: ${(err as Error).message}`, { cause: err })
    }
  }
  return child
}

/**
 * The processes one host connection started. Each runs in its own process group, so kill
 * reaches a shell's children too; when the connection goes, they all get SIGKILL.
 */
export class ProcessTable {
  private readonly children = new Map<number, ChildProcess>()

  async spawn(peer: WirePeer, args: SpawnArgs, identity: Identity | undefined): Promise<{ pid: number }> {
    if (this.children.has(args.ref)) throw new HarnessError('AGENT', `process ref ${args.ref} is already in use`)
    let child: ChildProcess
    try {
      child = await start(args, identity)
    } catch (err) {
      for (const id of [args.stdin, args.stdout, args.stderr, args.ipc]) if (id) peer.channel(id).destroy()
      throw err
    }
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

  /** A process of this connection to another nice value (raising its priority needs a root agent). */
  renice(ref: number, nice: number): void {
    const child = this.children.get(ref)
    if (!child?.pid) throw new HarnessError('AGENT', `no running process with ref ${ref}`)
    try {
      setNice(child.pid, nice)
    } catch (err) {
      throw new HarnessError('AGENT', `cannot set the nice value of process ${child.pid} to ${nice}: ${(err as Error).message}`, { cause: err })
    }
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
