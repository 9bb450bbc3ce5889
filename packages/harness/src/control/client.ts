import type { Duplex } from 'node:stream'
import { HarnessError, RequestRejectedError } from '../errors.js'
import { encodeLine, LineDecoder, MAX_LINE_BYTES } from './line-codec.js'
import { GuestMessage, type HealthPayload, type HostRequests, type HostRequestType, type MountPayload, type SecretPayload } from './messages.js'
import type { Transport } from './transport.js'

export const DEFAULT_REQUEST_TIMEOUT_MS = 10_000

interface Pending {
  type: HostRequestType
  resolve: (message: GuestMessage) => void
  reject: (err: Error) => void
}

export interface RequestOptions {
  timeoutMs?: number
}

/**
 * A stereosd connection (STEREOS-FACTS §1): one request in flight, replies matched by order and
 * checked like mb's checkAck (pong for ping, health for get_health, ack with the same
 * `reply_to` and `ok:true` for the rest), `lifecycle` pushes skipped, every line < 1 MiB.
 * A bad line from the guest fails the request it answers; the connection stays usable.
 */
export class StereosdClient {
  private readonly decoder = new LineDecoder()
  private pending: Pending | undefined
  private chain: Promise<unknown> = Promise.resolve()
  private closedError: Error | undefined
  private strayLine: string | undefined

  constructor(
    private readonly stream: Duplex,
    readonly endpoint: string,
  ) {
    stream.on('data', (chunk: Buffer) => this.onData(chunk))
    stream.on('error', (err) => this.onClose(err))
    stream.on('close', () => this.onClose())
  }

  static async open(transport: Transport, timeoutMs = 2_000): Promise<StereosdClient> {
    return new StereosdClient(await transport.connect(timeoutMs), transport.describe())
  }

  get closed(): boolean {
    return this.closedError !== undefined
  }

  ping(options?: RequestOptions): Promise<void> {
    return this.request('ping', undefined, options).then(() => undefined)
  }

  async health(options?: RequestOptions): Promise<HealthPayload> {
    const reply = await this.request('get_health', undefined, options)
    return (reply as Extract<GuestMessage, { type: 'health' }>).payload
  }

  setConfig(content: string, options?: RequestOptions): Promise<void> {
    return this.acked('set_config', { content }, options)
  }

  injectSecret(secret: SecretPayload, options?: RequestOptions): Promise<void> {
    return this.acked('inject_secret', { mode: 0o600, ...secret }, options)
  }

  injectSshKey(user: string, publicKey: string, options?: RequestOptions): Promise<void> {
    return this.acked('inject_ssh_key', { user, public_key: publicKey }, options)
  }

  mount(mount: MountPayload, options?: RequestOptions): Promise<void> {
    return this.acked('mount', mount, options)
  }

  /** stereosd acks, then powers the guest off; the caller waits for QEMU to exit. */
  shutdown(reason?: string, options?: RequestOptions): Promise<void> {
    return this.acked('shutdown', reason ? { reason } : undefined, options)
  }

  close(): void {
    this.stream.destroy()
    this.onClose()
  }

  private async acked<T extends HostRequestType>(type: T, payload: HostRequests[T], options?: RequestOptions): Promise<void> {
    await this.request(type, payload, options)
  }

  /** Send one request and return its validated reply. Requests queue behind each other. */
  request<T extends HostRequestType>(type: T, payload: HostRequests[T], options: RequestOptions = {}): Promise<GuestMessage> {
    const line = encodeLine(payload === undefined ? { type } : { type, payload })
    const run = () => this.send(type, line, options.timeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS)
    const result = this.chain.then(run, run)
    this.chain = result.catch(() => undefined)
    return result
  }

  private send(type: HostRequestType, line: Buffer, timeoutMs: number): Promise<GuestMessage> {
    if (this.closedError) return Promise.reject(this.closedError)
    if (this.strayLine !== undefined) {
      const stray = this.strayLine
      this.strayLine = undefined
      return Promise.reject(this.protocolError(`sent a line nobody asked for: ${clip(stray)}`))
    }
    return new Promise<GuestMessage>((resolve, reject) => {
      const timer = setTimeout(() => {
        // The reply may still come and would answer the next request: the connection is spent.
        this.pending = undefined
        reject(new HarnessError('CONTROL_PLANE', `stereosd did not answer ${type} within ${timeoutMs} ms (${this.endpoint})`))
        this.close()
      }, timeoutMs)
      this.pending = {
        type,
        resolve: (message) => {
          clearTimeout(timer)
          resolve(message)
        },
        reject: (err) => {
          clearTimeout(timer)
          reject(err)
        },
      }
      this.stream.write(line)
    })
  }

  private onData(chunk: Buffer): void {
    for (const event of this.decoder.push(chunk)) {
      if ('oversized' in event) {
        this.settle(undefined, this.protocolError(`sent a line of ${event.oversized} bytes, over the ${MAX_LINE_BYTES}-byte limit`))
      } else {
        this.onLine(event.line)
      }
    }
  }

  private onLine(line: string): void {
    let json: unknown
    try {
      json = JSON.parse(line)
    } catch {
      this.settle(undefined, this.protocolError(`sent a line that is not JSON: ${clip(line)}`))
      return
    }
    const parsed = GuestMessage.safeParse(json)
    if (!parsed.success) {
      const issue = parsed.error.issues[0]
      this.settle(
        undefined,
        this.protocolError(`sent a message that does not match the protocol (${issue?.path.join('.') || 'type'}: ${issue?.message}): ${clip(line)}`),
      )
      return
    }
    if (parsed.data.type === 'lifecycle') return
    this.settle(parsed.data)
  }

  private settle(message: GuestMessage | undefined, error?: Error): void {
    const pending = this.pending
    if (!pending) {
      if (message) this.strayLine = JSON.stringify(message)
      return
    }
    this.pending = undefined
    if (error || !message) {
      pending.reject(error ?? this.protocolError('sent an empty reply'))
      return
    }
    const mismatch = checkReply(pending.type, message)
    if (mismatch) pending.reject(mismatch)
    else pending.resolve(message)
  }

  private onClose(err?: Error): void {
    if (this.closedError) return
    this.closedError = new HarnessError('CONTROL_PLANE', `stereosd connection (${this.endpoint}) closed${err ? `: ${err.message}` : ''}`, { cause: err })
    this.pending?.reject(this.closedError)
    this.pending = undefined
  }

  private protocolError(what: string): HarnessError {
    return new HarnessError('PROTOCOL', `stereosd (${this.endpoint}) ${what}`, {
      fix: 'the guest does not speak the stereosd protocol this harness implements; check the mixtape version and serial.log',
    })
  }
}

/** mb's checkAck, plus the ping/get_health reply types (STEREOS-FACTS §1.6). */
export function checkReply(request: HostRequestType, reply: GuestMessage): Error | undefined {
  const expected = request === 'ping' ? 'pong' : request === 'get_health' ? 'health' : 'ack'
  if (reply.type !== expected) {
    if (reply.type === 'ack' && !reply.payload.ok) return new RequestRejectedError(request, reply.payload.error ?? '(no error text)')
    return new HarnessError('PROTOCOL', `stereosd answered ${request} with ${reply.type}, expected ${expected}`)
  }
  if (reply.type === 'ack') {
    if (reply.payload.reply_to !== request) {
      return new HarnessError('PROTOCOL', `stereosd acked ${JSON.stringify(reply.payload.reply_to)} while ${request} was in flight`)
    }
    if (!reply.payload.ok) return new RequestRejectedError(request, reply.payload.error ?? '(no error text)')
  }
  return undefined
}

function clip(line: string): string {
  return line.length > 200 ? `${line.slice(0, 200)}… (${line.length} chars)` : line
}
