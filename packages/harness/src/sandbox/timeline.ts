import type { Debug } from '../log.js'

export interface TimelineEntry {
  phase: string
  /** Milliseconds since the boot started. */
  atMs: number
}

/** When each boot phase finished, relative to the start of Sandbox.boot. */
export class Timeline {
  private readonly start = performance.now()
  readonly entries: TimelineEntry[] = []

  /** `trace` (DEBUG=stereos:boot) gets a line per phase: start, end and duration. */
  constructor(private readonly trace?: Debug) {}

  mark(phase: string): void {
    this.entries.push({ phase, atMs: this.elapsedMs() })
  }

  elapsedMs(): number {
    return Math.round(performance.now() - this.start)
  }

  /** Run one phase; `mark` names the timeline entry its end adds (the public SandboxInfo.timeline). */
  async phase<T>(name: string, run: () => Promise<T> | T, mark?: string): Promise<T> {
    const began = performance.now()
    this.trace?.(`${name}: started at ${this.elapsedMs()} ms`)
    try {
      const result = await run()
      if (mark) this.mark(mark)
      this.trace?.(`${name}: done in ${Math.round(performance.now() - began)} ms (at ${this.elapsedMs()} ms)`)
      return result
    } catch (err) {
      this.trace?.(`${name}: failed after ${Math.round(performance.now() - began)} ms: ${String((err as Error)?.message ?? err).split('\n')[0]}`)
      throw err
    }
  }
}
