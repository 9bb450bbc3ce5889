import { Duplex } from 'node:stream'
import { DATA_CHUNK, FrameType } from './frame.js'
import { WireError } from './wire-error.js'

/** Bytes either side may have in flight on one channel before the receiver grants more. */
export const CHANNEL_WINDOW = 1024 * 1024

/** What a Channel needs from the connection it lives on. */
export interface ChannelLink {
  send(channel: number, type: FrameType, payload?: Buffer): void
  /** The channel is finished both ways (or reset): forget it. */
  forget(channel: number): void
}

/**
 * One multiplexed byte stream, as a Node Duplex. Credit-based flow control: a writer sends at
 * most CHANNEL_WINDOW bytes the reader has not acknowledged, and the reader acknowledges only
 * what its consumer took, so a slow consumer stalls this channel and nothing else.
 */
export class Channel extends Duplex {
  private credit = CHANNEL_WINDOW
  /** Bytes received and not acknowledged yet. */
  private unacked = 0
  /** Bytes consumed by our reader that we have not yet credited back. */
  private owed = 0
  private waiting: (() => void) | undefined
  private endSent = false
  private endReceived = false

  constructor(
    readonly id: number,
    private readonly link: ChannelLink,
  ) {
    super({ allowHalfOpen: true, highWaterMark: 64 * 1024 })
    this.once('end', () => this.settleIfDone())
  }

  /** A DATA frame arrived. A peer that writes past its credit breaks the protocol. */
  receiveData(payload: Buffer): void {
    if (this.endReceived) throw new WireError(`DATA after END on channel ${this.id}`)
    this.unacked += payload.length
    if (this.unacked > CHANNEL_WINDOW) throw new WireError(`channel ${this.id} received ${this.unacked} bytes, over its ${CHANNEL_WINDOW}-byte window`)
    if (this.destroyed) return
    if (this.push(payload)) this.acknowledge(payload.length)
    else this.owed += payload.length
  }

  receiveEnd(): void {
    if (this.endReceived) return
    this.endReceived = true
    this.push(null)
  }

  receiveCredit(bytes: number): void {
    this.credit += bytes
    const resume = this.waiting
    this.waiting = undefined
    resume?.()
  }

  receiveReset(reason: string): void {
    this.endReceived = true
    this.endSent = true
    const err = new WireError(`channel ${this.id} was reset by the peer: ${reason}`)
    this.destroy(this.listenerCount('error') > 0 ? err : undefined)
  }

  /** The connection went away: fail whoever waits on this channel (a channel nobody watches just closes). */
  abort(err: Error): void {
    this.endReceived = true
    this.endSent = true
    this.destroy(this.listenerCount('error') > 0 ? err : undefined)
  }

  /** Abort the channel and tell the peer why, without raising the error here. */
  reset(reason: string): void {
    if (this.destroyed) return
    if (!this.endSent || !this.endReceived) {
      this.endSent = true
      this.endReceived = true
      this.link.send(this.id, FrameType.RESET, Buffer.from(reason))
    }
    this.destroy()
  }

  /** For channels that only carry data towards us: tell the peer we will not write. */
  readOnly(): this {
    this.end()
    return this
  }

  override _read(): void {
    if (this.owed > 0) {
      const owed = this.owed
      this.owed = 0
      this.acknowledge(owed)
    }
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.sendAll(chunk, callback)
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.endSent = true
    this.link.send(this.id, FrameType.END)
    this.settleIfDone()
    callback()
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    const resume = this.waiting
    this.waiting = undefined
    resume?.()
    if (!this.endSent || !this.endReceived) {
      this.endSent = true
      this.endReceived = true
      this.link.send(this.id, FrameType.RESET, Buffer.from(err ? err.message : 'closed'))
    }
    this.link.forget(this.id)
    callback(err)
  }

  private sendAll(chunk: Buffer, callback: (error?: Error | null) => void): void {
    let offset = 0
    const next = (): void => {
      while (offset < chunk.length) {
        if (this.destroyed) return callback(new Error(`channel ${this.id} is closed`))
        if (this.credit <= 0) {
          this.waiting = next
          return
        }
        const n = Math.min(chunk.length - offset, this.credit, DATA_CHUNK)
        this.link.send(this.id, FrameType.DATA, chunk.subarray(offset, offset + n))
        this.credit -= n
        offset += n
      }
      callback()
    }
    next()
  }

  private acknowledge(bytes: number): void {
    this.unacked -= bytes
    const payload = Buffer.allocUnsafe(4)
    payload.writeUInt32BE(bytes, 0)
    this.link.send(this.id, FrameType.CREDIT, payload)
  }

  private settleIfDone(): void {
    if (this.endSent && this.endReceived && this.readableEnded) this.link.forget(this.id)
  }
}
