import { readdirSync } from 'node:fs'
import { getPriority, setPriority } from 'node:os'

function threads(pid: number): number[] {
  try {
    return readdirSync(`/proc/${pid}/task`).map(Number).filter(Number.isSafeInteger)
  } catch {
    return []
  }
}

/**
 * Set a process's nice value on every thread: Linux keeps one per thread, and setpriority(2) on a
 * pid changes only the thread with that id. The main thread goes first, so threads it starts from
 * then on inherit the value; passes repeat until no thread differs (a few suffice).
 */
export function setNice(pid: number, nice: number): void {
  setPriority(pid, nice)
  for (let pass = 0; pass < 10; pass++) {
    let changed = false
    for (const tid of threads(pid)) {
      try {
        if (getPriority(tid) === nice) continue
        setPriority(tid, nice)
        changed = true
      } catch {
        // The thread ended meanwhile.
      }
    }
    if (!changed) return
  }
}
