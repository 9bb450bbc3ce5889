import { readdirSync, readFileSync } from 'node:fs'
import { setTimeout as sleep } from 'node:timers/promises'
import { HarnessError } from '../errors.js'
import { agentIsRoot } from './identity.js'

interface ProcEntry {
  pid: number
  ppid: number
  /** Zombies (Z) and dead (X) processes run no code and cannot be killed further. */
  state: string
  uids: number[]
}

function readProc(pid: number): ProcEntry | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // comm (field 2) may hold spaces and parentheses: the fields after it start at the last ')'.
    const [state, ppid] = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    const uidLine = /^Uid:\s+(.*)$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    if (state === undefined || ppid === undefined || !uidLine?.[1]) return undefined
    // Real and effective uid: who the process is, and who it acts as.
    const uids = uidLine[1].split(/\s+/).slice(0, 2).map(Number)
    return { pid, ppid: Number(ppid), state, uids }
  } catch {
    return undefined // gone meanwhile
  }
}

function processes(): ProcEntry[] {
  const out: ProcEntry[] = []
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    const entry = readProc(Number(name))
    if (entry) out.push(entry)
  }
  return out
}

/** `keep` and every process below it (none without `keep`). */
function treeOf(keep: number | undefined, all: ProcEntry[]): Set<number> {
  if (keep === undefined) return new Set()
  const tree = new Set<number>([keep])
  const children = new Map<number, number[]>()
  for (const p of all) children.set(p.ppid, [...(children.get(p.ppid) ?? []), p.pid])
  const queue = [keep]
  for (let pid = queue.pop(); pid !== undefined; pid = queue.pop()) {
    for (const child of children.get(pid) ?? []) {
      if (tree.has(child)) continue
      tree.add(child)
      queue.push(child)
    }
  }
  return tree
}

/**
 * SIGKILL every live process of `uid` (real or effective) outside `keep`'s tree, pass after pass
 * until a pass finds none: a process that forks while it is being swept is caught by the next
 * pass. Gives up (an error naming the survivors) after `deadlineMs`.
 */
export async function sweep(uid: number, keep: number | undefined, deadlineMs = 5000): Promise<number[]> {
  if (!agentIsRoot()) throw new HarnessError('AGENT', 'sweep needs the guest agent to run as root', { fix: "boot with bootstrap: 'ssh'" })
  if (uid === 0 || uid === process.getuid?.()) throw new HarnessError('AGENT', `sweep refuses uid ${uid}: it would kill the agent itself`)
  // Every process descends from pid 1 or 0 (the kernel's): keeping their trees would keep everything.
  if (keep !== undefined && keep < 2) throw new HarnessError('AGENT', `sweep: keep must be the pid of a process, not ${keep}`)
  const killed = new Set<number>()
  const deadline = Date.now() + deadlineMs
  for (;;) {
    const all = processes()
    const kept = treeOf(keep, all)
    const victims = all.filter((p) => p.uids.includes(uid) && p.state !== 'Z' && p.state !== 'X' && !kept.has(p.pid) && p.pid !== process.pid && p.pid !== 1)
    if (victims.length === 0) return [...killed].sort((a, b) => a - b)
    if (Date.now() > deadline)
      throw new HarnessError('AGENT', `sweep of uid ${uid}: processes ${victims.map((p) => p.pid).join(', ')} are still alive after SIGKILL`, {
        fix: 'they may be stuck in the kernel (state D); discard the VM',
      })
    for (const victim of victims) {
      try {
        process.kill(victim.pid, 'SIGKILL')
        killed.add(victim.pid)
      } catch {
        // Gone already.
      }
    }
    await sleep(5)
  }
}
