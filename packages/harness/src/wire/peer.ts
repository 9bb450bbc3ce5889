import type { Duplex } from 'node:stream'
import { deserialize, serialize } from 'node:v8'
import { HarnessError } from '../errors.js'
import { Channel, type ChannelLink } from './channel.js'
import { encodeFrame, encodeHeader, FrameDecoder, FrameType, MAX_PAYLOAD, frameTypeName, type Frame } from './frame.js'
import { Envelope, EVENTS, OPS, type EventData, type EventName, type OpArgs, type OpName, type OpResult } from './messages.js'
import { WireError } from './wire-error.js'

/** Before hello, only this much is buffered from an unauthenticated peer. */
export const HELLO_MAX_PAYLOAD = 4096

/** An op failed on the other side; carries the remote error's code and fix. */
export class RemoteError extends HarnessError {
  override readonly name = 'RemoteError'
  constructor(
    readonly op: string,
    readonly remoteCode: string,
    message: string,
    fix: string | undefined,
  ) {
    super('AGENT', `guest agent: ${op} failed: ${message}`, fix ? { fix } : {})
  }
}

export type RequestHandler = (op: OpName, args: unknown, peer: WirePeer) => Promise<unknown>

export interface PeerHandlers {
  onRequest?: RequestHandler
  onEvent?: <K extends EventName>(name: K, data: EventData<K>) => void
  /** Called once with the error that closed the connection (undefined: a clean close). */
  onClose?: (err: Error | undefined) => void
}

/** Encodes a control message; exported so tests can forge frames. */
export function encodeMessage(envelope: Record<string, unknown>): Buffer {
  return encodeFrame(0, FrameType.MESSAGE, serialize(envelope))
}

export function decodeV8(payload: Buffer, what: string): unknown {
  try {
    return deserialize(payload)
  } catch (err) {
    throw new WireError(`${what} is not a valid v8-serialized value: ${(err as Error).message}`, err)
  }
}

/**
 * One agent connection after hello: control requests/responses/events on channel 0 and any
 * number of flow-controlled data channels. The host allocates every channel id (odd numbers
 * would be the guest's, should it ever need some).
 */
export class WirePeer implements ChannelLink {
  private readonly decoder: FrameDecoder
  private readonly channels = new Map<number, Channel>()
  private readonly pending = new Map<number, { op: string; resolve: (v: unknown) => void; reject: (e: Error) => void }>()
  private nextRequest = 1
  private nextChannel = 2
  private closedWith: Error | undefined | null = null
  readonly closed: Promise<Error | undefined>
  private settleClosed!: (err: Error | undefined) => void

  constructor(
    private readonly socket: Duplex,
    private readonly handlers: PeerHandlers,
    leftover: Frame[] = [],
    decoder = new FrameDecoder({ maxPayload: MAX_PAYLOAD }),
  ) {
    this.decoder = decoder
    this.decoder.setLimit(MAX_PAYLOAD)
    this.closed = new Promise((resolve) => (this.settleClosed = resolve))
    socket.on('data', (chunk: Buffer) => this.receive(chunk))
    socket.on('error', (err) => this.close(new HarnessError('AGENT_UNREACHABLE', `agent connection failed: ${err.message}`, { cause: err })))
    socket.on('close', () => this.close(this.closedWith ?? new HarnessError('AGENT_UNREACHABLE', 'the agent connection closed')))
    socket.on('end', () => this.close(new HarnessError('AGENT_UNREACHABLE', 'the agent connection closed')))
    for (const frame of leftover) this.dispatch(frame)
  }

  get isClosed(): boolean {
    return this.closedWith !== null
  }

  /** Send an op and wait for its checked result. */
  request<K extends OpName>(op: K, args: OpArgs<K>): Promise<OpResult<K>> {
    if (this.closedWith !== null) return Promise.reject(this.closedWith ?? new HarnessError('AGENT_UNREACHABLE', 'the agent connection is closed'))
    const id = this.nextRequest++
    return new Promise<OpResult<K>>((resolve, reject) => {
      this.pending.set(id, { op, resolve: resolve as (v: unknown) => void, reject })
      this.socket.write(encodeMessage({ kind: 'request', id, op, body: args }))
    })
  }

  event<K extends EventName>(name: K, data: EventData<K>): void {
    if (this.closedWith !== null) return
    this.socket.write(encodeMessage({ kind: 'event', name, body: data }))
  }

  /** A new channel with a fresh id (host side). */
  openChannel(): Channel {
    const id = this.nextChannel
    this.nextChannel += 2
    return this.channel(id)
  }

  /** The channel with this id, registered now if new (the guest learns ids from requests). */
  channel(id: number): Channel {
    if (id === 0) throw new WireError('channel 0 is the control channel')
    let channel = this.channels.get(id)
    if (!channel) {
      if (this.closedWith !== null) {
        channel = new Channel(id, { send: () => undefined, forget: () => undefined })
        channel.abort(this.closedWith ?? new HarnessError('AGENT_UNREACHABLE', 'the agent connection is closed'))
        return channel
      }
      channel = new Channel(id, this)
      this.channels.set(id, channel)
    }
    return channel
  }

  send(channel: number, type: FrameType, payload?: Buffer): void {
    if (this.closedWith !== null || this.socket.destroyed) return
    if (payload && payload.length) {
      this.socket.write(encodeHeader(channel, type, payload.length))
      this.socket.write(payload)
    } else {
      this.socket.write(encodeHeader(channel, type, 0))
    }
  }

  forget(channel: number): void {
    this.channels.delete(channel)
  }

  /** Close the connection; pending requests and open channels fail with `err`. */
  close(err?: Error): void {
    if (this.closedWith !== null) return
    this.closedWith = err
    const reason = err ?? new HarnessError('AGENT_UNREACHABLE', 'the agent connection was closed')
    for (const { reject } of this.pending.values()) reject(reason)
    this.pending.clear()
    for (const channel of [...this.channels.values()]) channel.abort(reason)
    this.channels.clear()
    if (err instanceof WireError) this.socket.destroy()
    else this.socket.end()
    this.handlers.onClose?.(err)
    this.settleClosed(err)
  }

  private receive(chunk: Buffer): void {
    try {
      for (const frame of this.decoder.push(chunk)) this.dispatch(frame)
    } catch (err) {
      this.close(err instanceof WireError ? err : new WireError((err as Error).message, err))
    }
  }

  private dispatch(frame: Frame): void {
    if (this.closedWith !== null) return
    if (frame.channel === 0) {
      if (frame.type !== FrameType.MESSAGE) throw new WireError(`${frameTypeName(frame.type)} frame on the control channel after hello`)
      this.onMessage(Envelope(decodeV8(frame.payload, 'a control message'), 'message'))
      return
    }
    const channel = this.channels.get(frame.channel)
    // Frames for a channel we already closed are in flight; drop them.
    if (!channel) return
    switch (frame.type) {
      case FrameType.DATA:
        channel.receiveData(frame.payload)
        return
      case FrameType.END:
        channel.receiveEnd()
        return
      case FrameType.CREDIT:
        if (frame.payload.length !== 4) throw new WireError(`CREDIT frame with a ${frame.payload.length}-byte payload`)
        channel.receiveCredit(frame.payload.readUInt32BE(0))
        return
      case FrameType.RESET:
        channel.receiveReset(frame.payload.toString('utf8'))
        return
      default:
        throw new WireError(`${frameTypeName(frame.type)} frame on data channel ${frame.channel}`)
    }
  }

  private onMessage(message: Envelope): void {
    if (message.kind === 'response') {
      const waiter = message.id === undefined ? undefined : this.pending.get(message.id)
      if (!waiter) throw new WireError(`response to unknown request ${message.id}`)
      this.pending.delete(message.id as number)
      if (message.ok) {
        try {
          waiter.resolve(OPS[waiter.op as OpName].result(message.body, `${waiter.op} result`))
        } catch (err) {
          waiter.reject(err as Error)
          throw err
        }
      } else {
        const error = message.error ?? { code: 'UNKNOWN', message: 'no error given' }
        waiter.reject(new RemoteError(waiter.op, error.code, error.message, error.fix))
      }
      return
    }
    if (message.kind === 'event') {
      const name = message.name as EventName
      const check = EVENTS[name]
      if (!check) throw new WireError(`unknown event ${String(message.name)}`)
      this.handlers.onEvent?.(name, check(message.body, `${name} event`))
      return
    }
    this.onRequestMessage(message)
  }

  private onRequestMessage(message: Envelope): void {
    const id = message.id
    const op = message.op as OpName
    if (id === undefined) throw new WireError('request without an id')
    const reply = (envelope: Record<string, unknown>) => {
      if (this.closedWith === null) this.socket.write(encodeMessage({ kind: 'response', id, ...envelope }))
    }
    const fail = (err: unknown) => {
      const e = err as Partial<HarnessError> & Error
      const text = e.message ?? String(err)
      const message = e.fix ? text.replace(`\nFix: ${e.fix}`, '') : text
      reply({ ok: false, error: { code: (e as { code?: string }).code ?? 'ERROR', message, ...(e.fix ? { fix: e.fix } : {}) } })
    }
    const spec = OPS[op]
    if (!spec || !this.handlers.onRequest) {
      fail(new HarnessError('PROTOCOL', `unknown op ${String(message.op)}`))
      return
    }
    let args: unknown
    try {
      args = spec.args(message.body, `${op} arguments`)
    } catch (err) {
      fail(err)
      return
    }
    // Called synchronously: a handler registers the channels its request names before the
    // next frame (often that channel's first DATA) is dispatched. A synchronous throw fails
    // the request, not the connection.
    let result: Promise<unknown>
    try {
      result = this.handlers.onRequest(op, args, this)
    } catch (err) {
      fail(err)
      return
    }
    result.then((value) => reply({ ok: true, body: value ?? {} }), fail)
  }
}
