import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { HarnessError } from '../errors.js'
import { agentIsRoot } from './identity.js'

/** The parent cgroup of every worker's, under the cgroup2 mount (agent --worker-cgroups changes it). */
export const DEFAULT_WORKER_CGROUPS = 'stereos-harness'

/** mountinfo writes space, tab, newline and backslash in paths as octal escapes. */
function unescapeMountPath(path: string): string {
  return path.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(Number.parseInt(oct, 8)))
}

/**
 * Where cgroup2 is mounted read-write: /sys/fs/cgroup on a systemd guest (stereOS) or one that
 * mounts it there (the fixture), else the first cgroup2 mount (/sys/fs/cgroup/unified on a hybrid
 * host); undefined where there is none.
 */
export function cgroup2Mount(): string | undefined {
  let text: string
  try {
    text = readFileSync('/proc/self/mountinfo', 'utf8')
  } catch {
    return undefined
  }
  const mounts: string[] = []
  for (const line of text.split('\n')) {
    const [before, after] = line.split(' - ')
    const fields = before?.split(' ') ?? []
    if (after?.split(' ')[0] !== 'cgroup2' || fields[4] === undefined) continue
    if (!(fields[5] ?? '').split(',').includes('rw')) continue
    mounts.push(unescapeMountPath(fields[4]))
  }
  return mounts.find((mount) => mount === '/sys/fs/cgroup') ?? mounts[0]
}

function procsOf(dir: string): number[] {
  try {
    return readFileSync(join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number)
  } catch {
    return [] // removed meanwhile
  }
}

function populated(dir: string): boolean {
  try {
    return /^populated 1$/m.test(readFileSync(join(dir, 'cgroup.events'), 'utf8'))
  } catch {
    return false
  }
}

/** `dir` and every cgroup below it, parents first; empty once `dir` is gone. */
function cgroupTree(dir: string): string[] {
  const out: string[] = []
  const queue = [dir]
  for (let next = queue.shift(); next !== undefined; next = queue.shift()) {
    let subdirs: string[]
    try {
      subdirs = readdirSync(next, { withFileTypes: true })
        .filter((entry) => entry.isDirectory())
        .map((entry) => join(next, entry.name))
    } catch {
      continue // gone
    }
    out.push(next)
    queue.push(...subdirs)
  }
  return out
}

/**
 * One cgroup (v2) per worker process, under a root-owned parent. The agent moves a worker into
 * its cgroup before the worker's program runs, so everything the worker starts is born there
 * (setsid and double forks included), and without write access to a cgroup.procs file (the
 * parent and every cgroup in it are root's, 0644) nothing but a root process can leave. The
 * sweep kills every process in the cgroups of other workers, whatever its uid, and removes them.
 *
 * A process that runs as root can still move itself out (it can also kill the agent): for root
 * workers this stops what is left behind by accident or by an unprivileged trick, not by root.
 */
export class WorkerCgroups {
  private parent: string | undefined
  private seq = 0
  /** Created, and their process not yet in them: a sweep must not remove them. */
  private readonly pending = new Set<string>()
  /** The cgroup of each running worker, by pid: the one a sweep keeps. */
  private readonly byPid = new Map<number, string>()

  /** `name`: the parent, a cgroup directly below the cgroup2 mount; `none` starts every worker without a cgroup. */
  constructor(private readonly name: string = DEFAULT_WORKER_CGROUPS) {
    if (!/^[\w.-]+$/.test(name) || name === '.' || name === '..')
      throw new HarnessError('INVALID_OPTIONS', `--worker-cgroups must name one cgroup, like ${DEFAULT_WORKER_CGROUPS} (or be none), got ${name}`)
  }

  /** The parent cgroup, made on first use, or why there is none. */
  private resolveParent(): { dir: string } | { why: string } {
    if (this.parent) return { dir: this.parent }
    if (this.name === 'none') return { why: 'worker cgroups are off (agent --worker-cgroups none)' }
    if (!agentIsRoot()) return { why: 'the guest agent does not run as root, so it cannot make cgroups' }
    const mount = cgroup2Mount()
    if (!mount) return { why: 'the guest has no cgroup2 mounted (/proc/self/mountinfo lists none)' }
    const dir = join(mount, this.name)
    try {
      mkdirSync(dir, { recursive: true, mode: 0o755 })
      const stat = statSync(dir)
      // Only root may move processes in or out of the workers' cgroups.
      if (!stat.isDirectory() || stat.uid !== 0 || (stat.mode & 0o022) !== 0) return { why: `${dir} is not a directory that only root can write` }
    } catch (err) {
      return { why: `cannot make the cgroup ${dir}: ${(err as Error).message}` }
    }
    this.parent = dir
    return { dir }
  }

  /** A fresh, empty cgroup for one worker (enter() puts it there), or why there is none. */
  create(): { dir: string } | { why: string } {
    const parent = this.resolveParent()
    if ('why' in parent) return parent
    for (;;) {
      const dir = join(parent.dir, `w${process.pid}-${++this.seq}`)
      try {
        mkdirSync(dir)
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EEXIST') continue // an earlier agent's, with our pid
        return { why: `cannot make the cgroup ${dir}: ${(err as Error).message}` }
      }
      this.pending.add(dir)
      return { dir }
    }
  }

  /** Move `pid` (not yet running its program) into its cgroup `dir`. */
  enter(dir: string, pid: number): void {
    writeFileSync(join(dir, 'cgroup.procs'), `${pid}\n`)
    this.pending.delete(dir)
    this.byPid.set(pid, dir)
  }

  /** The worker `pid` has exited: its cgroup (and what it left there) is the next sweep's. */
  exited(pid: number): void {
    this.byPid.delete(pid)
  }

  /** A cgroup whose worker never entered it (its start failed). */
  discard(dir: string): void {
    this.pending.delete(dir)
    try {
      rmdirSync(dir)
    } catch {
      // Not empty after all: the next sweep kills what is in it.
    }
  }

  /**
   * Kill every process in every worker cgroup but `keep`'s (and those being started), and remove
   * them. Resolves to the pids it found there; nothing to do where workers have no cgroups.
   */
  async sweep(keep: number | undefined, deadlineMs = 5000): Promise<number[]> {
    // Resolved here too: an agent started anew still sweeps what an earlier one's workers left.
    const parent = this.resolveParent()
    if ('why' in parent) return []
    const kept = keep === undefined ? undefined : this.byPid.get(keep)
    const killed: number[] = []
    for (const entry of readdirSync(parent.dir, { withFileTypes: true })) {
      const dir = join(parent.dir, entry.name)
      if (!entry.isDirectory() || dir === kept || this.pending.has(dir)) continue
      killed.push(...(await this.destroy(dir, deadlineMs)))
    }
    return killed.sort((a, b) => a - b)
  }

  /**
   * SIGKILL everything in `dir` and the cgroups below it (cgroup.kill, kernel 5.14+; else a
   * SIGKILL per process, pass after pass, so a process forking meanwhile is caught by the next),
   * then remove them. Resolves to the pids it found there.
   */
  async destroy(dir: string, deadlineMs = 5000): Promise<number[]> {
    const found = new Set<number>()
    const deadline = Date.now() + deadlineMs
    for (;;) {
      const tree = cgroupTree(dir)
      if (tree.length === 0) break
      const pids = tree.flatMap(procsOf)
      // A root worker can move any process into its cgroup: never kill the agent or init for it.
      if (pids.includes(process.pid) || pids.includes(1))
        throw new HarnessError('AGENT', `the worker cgroup ${dir} holds ${pids.includes(1) ? 'init' : 'the guest agent'}; it is not killed`, {
          fix: 'a process running as root moved it there: discard the VM',
        })
      for (const pid of pids) found.add(pid)
      if (pids.length === 0 && !populated(dir)) {
        try {
          for (const cgroup of tree.reverse()) rmdirSync(cgroup)
          break
        } catch {
          // A cgroup appeared or a process entered meanwhile: once more.
        }
      }
      if (Date.now() > deadline)
        throw new HarnessError('AGENT', `the worker cgroup ${dir} still holds processes ${pids.join(', ') || '(exiting)'} after SIGKILL`, {
          fix: 'they may be stuck in the kernel (state D); discard the VM',
        })
      this.kill(tree, pids)
      await sleep(5)
    }
    return [...found].sort((a, b) => a - b)
  }

  /** Every process in these cgroups, now (best effort; destroy waits for them). */
  private kill(tree: string[], pids: number[]): void {
    const root = tree[0]
    if (root && existsSync(join(root, 'cgroup.kill'))) {
      try {
        writeFileSync(join(root, 'cgroup.kill'), '1')
        return
      } catch {
        // Removed meanwhile, or refused: kill one by one.
      }
    }
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL')
      } catch {
        // Gone already.
      }
    }
  }
}
