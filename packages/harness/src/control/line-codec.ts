import { HarnessError } from '../errors.js'

/** stereosd's bufio.Scanner limit (STEREOS-FACTS §1.2): a line must stay under 1 MiB. */
export const MAX_LINE_BYTES = 1024 * 1024

export function encodeLine(message: unknown): Buffer {
  const line = Buffer.from(`${JSON.stringify(message)}\n`)
  if (line.length > MAX_LINE_BYTES) {
    throw new HarnessError(
      'REQUEST_TOO_LARGE',
      `A stereosd request line would be ${line.length} bytes; stereosd reads lines of at most ${MAX_LINE_BYTES} bytes and drops the connection on longer ones`,
      {
        fix: 'send less per request (split secrets, or share large content through a mount instead)',
      },
    )
  }
  return line
}

export type LineEvent = { line: string } | { oversized: number }

/**
 * Splits a byte stream into lines, skipping empty ones. A line longer than the limit is
 * reported once as `oversized` and discarded up to its newline, without buffering it:
 * memory stays bounded whatever the peer sends.
 */
export class LineDecoder {
  private parts: Buffer[] = []
  private size = 0
  private discarding = 0

  constructor(private readonly maxBytes = MAX_LINE_BYTES) {}

  push(chunk: Buffer): LineEvent[] {
    const events: LineEvent[] = []
    let start = 0
    while (start < chunk.length) {
      const nl = chunk.indexOf(0x0a, start)
      const end = nl === -1 ? chunk.length : nl
      const piece = chunk.subarray(start, end)
      if (this.discarding > 0) {
        this.discarding += piece.length
      } else if (this.size + piece.length > this.maxBytes) {
        this.discarding = this.size + piece.length
        this.parts = []
        this.size = 0
      } else {
        this.parts.push(piece)
        this.size += piece.length
      }
      if (nl === -1) break
      if (this.discarding > 0) {
        events.push({ oversized: this.discarding })
        this.discarding = 0
      } else {
        const line = Buffer.concat(this.parts).toString('utf8').replace(/\r$/, '')
        if (line.trim()) events.push({ line })
      }
      this.parts = []
      this.size = 0
      start = nl + 1
    }
    return events
  }
}
