import { deserialize, serialize } from 'node:v8'
import { WireError } from './wire-error.js'

/**
 * Length-prefixed v8 messages on a raw byte stream (u32 BE length, then v8.serialize). The
 * Vitest pool speaks this on a guest process's ipc channel: structured clones carry the
 * cycles and errors of Vitest's task trees, which JSON cannot.
 */
export function encodeV8(value: unknown): Buffer {
  const body = serialize(value)
  const header = Buffer.allocUnsafe(4)
  header.writeUInt32BE(body.length, 0)
  return Buffer.concat([header, body])
}

/** 256 MiB: a collected file tree is large, but not that large. */
export const MAX_V8_MESSAGE = 256 * 1024 * 1024

export class V8Decoder {
  private chunks: Buffer[] = []
  private buffered = 0

  constructor(private readonly maxMessage = MAX_V8_MESSAGE) {}

  push(chunk: Buffer): unknown[] {
    this.chunks.push(chunk)
    this.buffered += chunk.length
    const out: unknown[] = []
    for (;;) {
      if (this.buffered < 4) break
      const first = this.chunks[0] as Buffer
      const head = first.length >= 4 ? first : Buffer.concat(this.chunks, this.buffered)
      const length = head.readUInt32BE(0)
      if (length > this.maxMessage) throw new WireError(`a ${length}-byte message exceeds the ${this.maxMessage}-byte limit`)
      // Concatenate only once the whole message is here: no quadratic copying of big ones.
      if (this.buffered < 4 + length) break
      const all = this.chunks.length === 1 ? first : Buffer.concat(this.chunks, this.buffered)
      try {
        out.push(deserialize(all.subarray(4, 4 + length)))
      } catch (err) {
        throw new WireError(`a message is not valid v8-serialized data: ${(err as Error).message}`, err)
      }
      const rest = all.subarray(4 + length)
      this.chunks = rest.length ? [rest] : []
      this.buffered = rest.length
    }
    return out
  }
}
