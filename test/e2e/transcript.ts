import { connect, type Socket } from 'node:net'

interface Step {
  request: string
  raw?: boolean
  /** `request` is the line's bytes in hex. */
  hex?: boolean
  /** `request` repeated this many times. */
  repeat?: number
  reply: string | null
  expect?: unknown
}
export interface Transcript {
  name: string
  fixture?: boolean
  steps: Step[]
}

/** The bytes a step sends, newline included. */
export function requestBytes(step: Step): Buffer {
  const text = step.request.repeat(step.repeat ?? 1)
  return Buffer.concat([step.hex ? Buffer.from(text, 'hex') : Buffer.from(text), Buffer.from('\n')])
}

/** `expect` patterns: `{"$re": "…"}` matches a string, `{"$int": true}` any integer; else equality. */
export function matches(pattern: unknown, value: unknown): boolean {
  if (pattern && typeof pattern === 'object' && !Array.isArray(pattern)) {
    const p = pattern as Record<string, unknown>
    if (typeof p.$re === 'string') return typeof value === 'string' && new RegExp(p.$re).test(value)
    if (p.$int === true) return Number.isInteger(value)
    if (!value || typeof value !== 'object') return false
    const v = value as Record<string, unknown>
    const keys = new Set([...Object.keys(p), ...Object.keys(v)])
    return [...keys].every((key) => matches(p[key], v[key]))
  }
  return JSON.stringify(pattern) === JSON.stringify(value)
}

/** A raw NDJSON connection: what a transcript replay needs, nothing of the host client. */
export class RawConnection {
  private buffer = ''
  private lines: string[] = []
  private waiters: ((line: string | undefined) => void)[] = []
  closed = false

  private constructor(private readonly socket: Socket) {
    socket.setEncoding('utf8')
    socket.on('data', (chunk: string) => {
      this.buffer += chunk
      for (let nl = this.buffer.indexOf('\n'); nl !== -1; nl = this.buffer.indexOf('\n')) {
        const line = this.buffer.slice(0, nl)
        this.buffer = this.buffer.slice(nl + 1)
        const waiter = this.waiters.shift()
        if (waiter) waiter(line)
        else this.lines.push(line)
      }
    })
    socket.on('close', () => {
      this.closed = true
      for (const waiter of this.waiters.splice(0)) waiter(undefined)
    })
    socket.on('error', () => undefined)
  }

  /** A 127.0.0.1 port, or a unix socket path (QEMU in a private network namespace). */
  static open(target: number | string): Promise<RawConnection> {
    return new Promise((resolve, reject) => {
      const where = typeof target === 'number' ? { host: '127.0.0.1', port: target } : { path: target }
      const socket = connect(where, () => resolve(new RawConnection(socket)))
      socket.once('error', reject)
    })
  }

  write(data: string | Buffer): void {
    this.socket.write(data)
  }

  /** The next line, or undefined if the peer closed, or 'timeout'. */
  next(timeoutMs: number): Promise<string | undefined | 'timeout'> {
    const queued = this.lines.shift()
    if (queued !== undefined) return Promise.resolve(queued)
    if (this.closed) return Promise.resolve(undefined)
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(waiter), 1)
        resolve('timeout')
      }, timeoutMs)
      const waiter = (line: string | undefined) => {
        clearTimeout(timer)
        resolve(line)
      }
      this.waiters.push(waiter)
    })
  }

  close(): void {
    this.socket.destroy()
  }
}
