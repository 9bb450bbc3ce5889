import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process'
import { existsSync, statSync } from 'node:fs'
import { homedir } from 'node:os'
import { delimiter, isAbsolute, join, resolve } from 'node:path'
import type { Duplex, Readable, Writable } from 'node:stream'
import { HarnessError } from '../errors.js'
import type { OpArgs } from '../wire/messages.js'
import { TOKEN_SECRET } from '../wire/messages.js'
import type { WirePeer } from '../wire/peer.js'
import { agentIsRoot, type Identity } from './identity.js'
import { setNice } from './priority.js'
import { setprivPath, shellPath } from './setpriv.js'
import type { WorkerCgroups } from './worker-cgroups.js'

type SpawnArgs = OpArgs<'spawn'>

/**
 * Variables that say how the agent was started, not what the guest is: under the SSH bootstrap
 * it runs through sudo and a shell, which set SUDO_USER/UID/GID/COMMAND (the launch line), MAIL
 * (root's spool), PWD (admin's home, not the process's cwd), SHLVL, `_` and TERM (no process the
 * agent starts has a terminal). A process under `forks` has none of them; the ones a caller
 * wants (the pool passes the host's TERM) it names in `env`.
 */
const LAUNCH_VARIABLES = /^(SUDO_[A-Z_]+|MAIL|PWD|OLDPWD|SHLVL|_|TERM)$/

/** The environment a guest process starts from: the agent's, minus its token and its launch's variables, with the target user's HOME/USER. */
function baseEnv(identity: Identity | undefined): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  for (const [key, value] of Object.entries(process.env)) if (key !== TOKEN_SECRET && !LAUNCH_VARIABLES.test(key)) env[key] = value
  env.PATH ??= '/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin'
  // The agent's SHELL is its own user's login shell (sudo set root's): not another user's.
  if (identity && identity.uid !== process.getuid?.()) delete env.SHELL
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

/** Whether the process would run as root: then only a cgroup can find what it leaves behind. */
function runsAsRoot(identity: Identity | undefined): boolean {
  return identity ? identity.uid === 0 : agentIsRoot()
}

/**
 * A worker's program waits for this line on an extra pipe (the gate), which the agent writes once
 * the process is in its cgroup: the script is the agent's, so nothing of the worker's runs, or
 * forks, outside it. The gate's fd is closed before the program starts.
 */
const GATE = 'go'
const gateScript = (fd: number) => `read -r line <&${fd} && [ "$line" = ${GATE} ] && exec "$@" ${fd}<&-`

interface Started {
  child: ChildProcess
  /** A worker's cgroup (absent for a non-worker, or a non-root worker on a guest without cgroups). */
  cgroup?: string
}

/**
 * Start the process (through setpriv for noNewPrivs; a worker through the gate, into a cgroup of
 * its own) at its nice value; rejects if it did not start.
 */
async function start(args: SpawnArgs, identity: Identity | undefined, cgroups: WorkerCgroups): Promise<Started> {
  const stdio: StdioOptions = [args.stdin ? 'pipe' : 'ignore', args.stdout ? 'pipe' : 'ignore', args.stderr ? 'pipe' : 'ignore']
  if (args.ipc) stdio.push('pipe')
  const env = { ...baseEnv(identity), ...args.env }
  const cwd = args.cwd ?? identity?.home ?? homedir()
  // Behind setpriv or the gate, a missing command would be an exit code, not a spawn error.
  const cmd = args.noNewPrivs || args.worker ? resolveCommand(args.cmd, env.PATH, cwd) : args.cmd
  // With no_new_privs set (setpriv sets it, then execs), no setuid program or file capability can
  // give the process more than it starts with. Node's uid/gid make libuv call setgroups(0, NULL)
  // first: no supplementary groups either.
  let [file, argv] = args.noNewPrivs ? [setprivPath(), ['--no-new-privs', '--', cmd, ...args.args]] : [cmd, args.args]
  let cgroup: string | undefined
  let gate: number | undefined
  if (args.worker) {
    const made = cgroups.create()
    if ('dir' in made) {
      cgroup = made.dir
      gate = stdio.length
      stdio.push('pipe')
      ;[file, argv] = [shellPath(), ['-c', gateScript(gate), 'stereos-worker', file, ...argv]]
    } else if (runsAsRoot(identity)) {
      // A uid sweep of root would kill the agent: without a cgroup, its leftovers could not be found.
      throw new HarnessError('AGENT', `cannot start ${args.cmd} as a worker running as root: ${made.why}, so what it leaves running could not be swept`, {
        fix: "mount cgroup2 at /sys/fs/cgroup in the guest (stereOS's systemd does), or run the tests as a non-root host user",
      })
    }
    // Otherwise a non-root worker without a cgroup: the uid sweep finds what it leaves.
  }
  const child = spawn(file, argv, {
    stdio,
    detached: true,
    env,
    cwd,
    ...(identity ? { uid: identity.uid, gid: identity.gid } : {}),
  })
  try {
    await new Promise<void>((resolve, reject) => {
      child.once('spawn', resolve)
      child.once('error', (err: NodeJS.ErrnoException) => {
        const why = err.code === 'ENOENT' ? (args.cwd ? `${args.cmd} or the cwd ${args.cwd} does not exist` : `${args.cmd} was not found on PATH`) : err.message
        reject(new HarnessError('AGENT', `cannot start ${args.cmd}: ${why}`, { cause: err }))
      })
    })
  } catch (err) {
    if (cgroup) cgroups.discard(cgroup)
    throw err
  }
  const fail = (err: unknown, what: string) => {
    child.kill('SIGKILL')
    if (cgroup) void cgroups.destroy(cgroup).catch(() => undefined)
    return new HarnessError('AGENT', `cannot ${what} of ${args.cmd}: ${(err as Error).message}`, { cause: err })
  }
  if (cgroup) {
    try {
      cgroups.enter(cgroup, child.pid as number)
    } catch (err) {
      throw fail(err, `put the process into its cgroup ${cgroup}`)
    }
  }
  if (args.nice !== undefined) {
    try {
      setNice(child.pid as number, args.nice)
    } catch (err) {
      throw fail(err, `set the nice value to ${args.nice}`)
    }
  }
  if (gate !== undefined) {
    const pipe = child.stdio[gate] as Duplex
    pipe.on('error', () => undefined) // the process died first: its exit says so
    pipe.end(`${GATE}\n`, () => pipe.destroy())
  }
  return cgroup ? { child, cgroup } : { child }
}

/**
 * The processes one host connection started. Each runs in its own process group, so kill
 * reaches a shell's children too; when the connection goes, they all get SIGKILL.
 */
export class ProcessTable {
  private readonly children = new Map<number, ChildProcess>()
  /** The cgroups of the workers this connection started: what they leave goes with the connection. */
  private readonly cgroups = new Set<string>()

  constructor(private readonly workerCgroups: WorkerCgroups) {}

  async spawn(peer: WirePeer, args: SpawnArgs, identity: Identity | undefined): Promise<{ pid: number }> {
    if (this.children.has(args.ref)) throw new HarnessError('AGENT', `process ref ${args.ref} is already in use`)
    let child: ChildProcess
    let cgroup: string | undefined
    try {
      ;({ child, cgroup } = await start(args, identity, this.workerCgroups))
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
    if (cgroup) this.cgroups.add(cgroup)
    child.once('close', (code, signal) => {
      this.children.delete(args.ref)
      this.workerCgroups.exited(pid)
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

  /** The host went away: nothing it started may outlive its connection (a worker's setsid children included). */
  killAll(log: (line: string) => void): void {
    for (const child of this.children.values()) {
      try {
        if (child.pid) process.kill(-child.pid, 'SIGKILL')
      } catch {
        child.kill('SIGKILL')
      }
    }
    for (const cgroup of this.cgroups) {
      this.workerCgroups.destroy(cgroup).catch((err: unknown) => log(`cannot sweep ${cgroup}: ${(err as Error).message}`))
    }
  }
}

/** pipe() without letting one side's error crash the agent: an error ends the other side. */
function wire(from: Readable, to: Writable): void {
  from.on('error', () => to.destroy())
  to.on('error', () => from.destroy())
  from.pipe(to)
}
