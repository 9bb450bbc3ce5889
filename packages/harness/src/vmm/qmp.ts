import { connect, type Socket } from 'node:net'
import { HarnessError } from '../errors.js'

interface Pending {
  resolve: (value: unknown) => void
  reject: (err: Error) => void
}

/**
 * A QMP client: greeting, `qmp_capabilities`, then one command at a time. Asynchronous events
 * (`{"event": …}`) are skipped. Used for query-status, system_powerdown and quit.
 */
export class QmpClient {
  private buffer = ''
  private queue: Pending[] = []
  private greeted: Pending | undefined
  private closed: Error | undefined
  private chain: Promise<unknown> = Promise.resolve()

  private constructor(private readonly socket: Socket) {
    socket.setEncoding('utf8')
    socket.on('data', (chunk: string) => this.onData(chunk))
    socket.on('error', (err) => this.fail(err))
    socket.on('close', () => this.fail(new HarnessError('QMP', 'QMP connection closed')))
  }

  static async connect(path: string, timeoutMs = 5_000): Promise<QmpClient> {
    const socket = connect(path)
    socket.setTimeout(timeoutMs, () => socket.destroy(new HarnessError('QMP', `QMP at ${path} did not answer within ${timeoutMs} ms`)))
    const client = new QmpClient(socket)
    await new Promise((resolve, reject) => {
      client.greeted = { resolve, reject }
    })
    socket.setTimeout(0)
    await client.execute('qmp_capabilities')
    return client
  }

  /** Run one command; commands are serialised because QMP replies carry no id we set. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    const run = async (): Promise<T> => {
      if (this.closed) throw this.closed
      const reply = new Promise<unknown>((resolve, reject) => this.queue.push({ resolve, reject }))
      this.socket.write(`${JSON.stringify(args ? { execute: command, arguments: args } : { execute: command })}\n`)
      return (await reply) as T
    }
    const result = this.chain.then(run, run)
    this.chain = result.catch(() => undefined)
    return result
  }

  async queryStatus(): Promise<{ running: boolean; status: string }> {
    return this.execute('query-status')
  }

  close(): void {
    this.socket.destroy()
  }

  private onData(chunk: string): void {
    this.buffer += chunk
    for (let nl = this.buffer.indexOf('\n'); nl !== -1; nl = this.buffer.indexOf('\n')) {
      const line = this.buffer.slice(0, nl).trim()
      this.buffer = this.buffer.slice(nl + 1)
      if (line) this.onMessage(line)
    }
  }

  private onMessage(line: string): void {
    let msg: { QMP?: unknown; event?: unknown; return?: unknown; error?: { class: string; desc: string } }
    try {
      msg = JSON.parse(line)
    } catch {
      this.fail(new HarnessError('QMP', `QMP sent a line that is not JSON: ${line.slice(0, 200)}`))
      return
    }
    if (msg.QMP !== undefined) {
      this.greeted?.resolve(undefined)
      this.greeted = undefined
      return
    }
    if (msg.event !== undefined) return
    const pending = this.queue.shift()
    if (!pending) return
    if (msg.error) pending.reject(new HarnessError('QMP', `QMP error ${msg.error.class}: ${msg.error.desc}`))
    else pending.resolve(msg.return)
  }

  private fail(err: Error): void {
    if (this.closed) return
    this.closed = err
    this.greeted?.reject(err)
    for (const pending of this.queue.splice(0)) pending.reject(err)
  }
}
