/**
 * The agent's stderr is the guest console, which QEMU writes to the host's serial.log: anything
 * in the guest that can reach the agent port (a test, say) could grow that file without limit
 * by connecting and failing its hello. Refusals are logged at a bounded rate instead: the first
 * `burst` of each period, then one line saying the rest are not, then a count when the period ends.
 */
export interface LimitedLogOptions {
  /** Lines logged per period before the rest are counted instead. */
  burst?: number
  periodMs?: number
  /** Longest line written; the tail of a longer one is cut (its text may come from the peer). */
  maxLineChars?: number
  now?: () => number
}

export const REFUSAL_LOG_BURST = 5
export const REFUSAL_LOG_PERIOD_MS = 60_000
const MAX_LINE_CHARS = 300

export function limitedLog(log: (line: string) => void, options: LimitedLogOptions = {}): (line: string) => void {
  const burst = options.burst ?? REFUSAL_LOG_BURST
  const periodMs = options.periodMs ?? REFUSAL_LOG_PERIOD_MS
  const maxLineChars = options.maxLineChars ?? MAX_LINE_CHARS
  const now = options.now ?? Date.now
  let periodStart = Number.NEGATIVE_INFINITY
  let logged = 0
  let dropped = 0
  return (line) => {
    const t = now()
    if (t - periodStart >= periodMs) {
      if (dropped > 0) log(`${dropped} further refusals were not logged in the last ${Math.round(periodMs / 1000)} s`)
      periodStart = t
      logged = 0
      dropped = 0
    }
    if (logged < burst) {
      logged++
      log(line.length > maxLineChars ? `${line.slice(0, maxLineChars)}…` : line)
      return
    }
    if (dropped === 0) log(`further refusals not logged for up to ${Math.round(periodMs / 1000)} s`)
    dropped++
  }
}
