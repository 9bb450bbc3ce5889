import { readFileSync } from 'node:fs'

/** Process start time in clock ticks since boot (field 22 of /proc/<pid>/stat), to tell a live owner from a reused PID. */
export function processStartTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // comm (field 2) may contain spaces and parentheses: split after the last ')'.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return rest[19]
  } catch {
    return undefined
  }
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/** The argv of a live process, or undefined when it is gone. */
export function processArgv(pid: number): string[] | undefined {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean)
  } catch {
    return undefined
  }
}

/** CPU seconds a process has used (utime + stime, fields 14 and 15 of /proc/<pid>/stat). */
export function processCpuSeconds(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    // USER_HZ is 100 on every Linux ABI Node runs on.
    return (Number(rest[11]) + Number(rest[12])) / 100
  } catch {
    return undefined
  }
}
