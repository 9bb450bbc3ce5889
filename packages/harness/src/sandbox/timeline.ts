export interface TimelineEntry {
  phase: string
  /** Milliseconds since the boot started. */
  atMs: number
}

/** When each boot phase finished, relative to the start of Sandbox.boot. */
export class Timeline {
  private readonly start = performance.now()
  readonly entries: TimelineEntry[] = []

  mark(phase: string): void {
    this.entries.push({ phase, atMs: Math.round(performance.now() - this.start) })
  }

  elapsedMs(): number {
    return Math.round(performance.now() - this.start)
  }
}
