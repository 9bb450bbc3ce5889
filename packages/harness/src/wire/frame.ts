/**
 * The agent wire format, shared by the host (agent-client/) and the guest (agent/).
 *
 *   u32 BE  payload length
 *   u32 BE  channel (0 = control)
 *   u8      frame type
 *   …       payload
 *
 * This module and the rest of wire/ import only Node built-ins and ../errors.js: the guest
 * agent runs them from the harness share with no node_modules.
 */
import { WireError } from './wire-error.js'

export const HEADER_BYTES = 9

export const FrameType = {
  /** Channel 0, first frame each way: v8 { magic, version, token | accepted }. */
  HELLO: 1,
  /** Channel 0: one v8-serialized control message (request, response, event). */
  MESSAGE: 2,
  /** Bytes on a data channel, within the sender's credit. */
  DATA: 3,
  /** The sender will write no more on this channel (half-close). */
  END: 4,
  /** Payload u32 BE: the receiver consumed that many more bytes; the sender may send them. */
  CREDIT: 5,
  /** The channel is aborted; payload is a UTF-8 reason. */
  RESET: 6,
} as const
export type FrameType = (typeof FrameType)[keyof typeof FrameType]

const TYPES = new Set<number>(Object.values(FrameType))
const NAMES = new Map<number, string>(Object.entries(FrameType).map(([name, n]) => [n, name]))

export function frameTypeName(type: number): string {
  return NAMES.get(type) ?? `type ${type}`
}

export interface Frame {
  channel: number
  type: FrameType
  payload: Buffer
}

export interface DecoderLimits {
  /** Largest payload accepted (bytes). Anything larger is an error before it is buffered. */
  maxPayload: number
}

/** 1 MiB: data frames are cut at DATA_CHUNK, control messages must fit. */
export const MAX_PAYLOAD = 1024 * 1024
/** Data is sent in pieces this large, so one busy channel cannot starve the others. */
export const DATA_CHUNK = 256 * 1024

export function encodeHeader(channel: number, type: FrameType, length: number): Buffer {
  const header = Buffer.allocUnsafe(HEADER_BYTES)
  header.writeUInt32BE(length, 0)
  header.writeUInt32BE(channel, 4)
  header.writeUInt8(type, 8)
  return header
}

export function encodeFrame(channel: number, type: FrameType, payload: Buffer = Buffer.alloc(0)): Buffer {
  return Buffer.concat([encodeHeader(channel, type, payload.length), payload])
}

/**
 * Incremental decoder. Holds at most one partial frame (≤ maxPayload + header) plus the rest of
 * the chunk being parsed; a bad header throws before its payload is buffered.
 */
export class FrameDecoder {
  private chunks: Buffer[] = []
  private buffered = 0
  private failed: WireError | undefined

  constructor(private limits: DecoderLimits = { maxPayload: MAX_PAYLOAD }) {}

  /** Tighten or relax the payload limit (the agent allows only small frames before hello). */
  setLimit(maxPayload: number): void {
    this.limits = { maxPayload }
  }

  /** Bytes held for a frame that is not complete yet. */
  get pending(): number {
    return this.buffered
  }

  /** Feed bytes; returns every frame they complete. Throws WireError on malformed input, then on every later call. */
  push(chunk: Buffer): Frame[] {
    if (this.failed) throw this.failed
    if (chunk.length) {
      this.chunks.push(chunk)
      this.buffered += chunk.length
    }
    const frames: Frame[] = []
    for (;;) {
      if (this.buffered < HEADER_BYTES) break
      const header = this.peek(HEADER_BYTES)
      const length = header.readUInt32BE(0)
      const channel = header.readUInt32BE(4)
      const type = header.readUInt8(8)
      if (!TYPES.has(type)) throw this.fail(`unknown frame type ${type} on channel ${channel}`)
      if (length > this.limits.maxPayload) {
        throw this.fail(`${frameTypeName(type)} frame of ${length} bytes on channel ${channel} exceeds the ${this.limits.maxPayload}-byte limit`)
      }
      if (this.buffered < HEADER_BYTES + length) break
      this.take(HEADER_BYTES)
      frames.push({ channel, type: type as FrameType, payload: this.take(length) })
    }
    return frames
  }

  private fail(message: string): WireError {
    this.failed = new WireError(message)
    this.chunks = []
    this.buffered = 0
    return this.failed
  }

  private peek(n: number): Buffer {
    const first = this.chunks[0] as Buffer
    if (first.length >= n) return first.subarray(0, n)
    return Buffer.concat(this.chunks, this.buffered).subarray(0, n)
  }

  private take(n: number): Buffer {
    if (n === 0) return Buffer.alloc(0)
    const first = this.chunks[0] as Buffer
    let out: Buffer
    if (first.length >= n) {
      out = first.subarray(0, n)
      if (first.length === n) this.chunks.shift()
      else this.chunks[0] = first.subarray(n)
    } else {
      const all = Buffer.concat(this.chunks, this.buffered)
      out = all.subarray(0, n)
      this.chunks = all.length > n ? [all.subarray(n)] : []
    }
    this.buffered -= n
    return out
  }
}
