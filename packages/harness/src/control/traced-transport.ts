import type { Duplex } from 'node:stream'
import { debug, type Debug } from '../log.js'
import { frameTypeName, HEADER_BYTES } from '../wire/frame.js'
import type { Transport } from './transport.js'

/**
 * DEBUG tracing of the host's connections: `stereos:control` lists stereosd's NDJSON lines
 * (message type and size), `stereos:wire` the agent's frames (type, channel, size). Only
 * headers are read: payload bytes (secrets, the agent token in HELLO, file contents) are
 * skipped, never kept or printed. With the namespace off, connections are not touched.
 */

export interface FrameSummary {
  type: string
  channel: number
  length: number
}

/** Frame headers out of a byte stream, in any chunking; payloads are counted past, not buffered. */
export class FrameHeaderScanner {
  private readonly header = Buffer.alloc(HEADER_BYTES)
  private have = 0
  private skip = 0

  push(chunk: Buffer): FrameSummary[] {
    const frames: FrameSummary[] = []
    let at = 0
    while (at < chunk.length) {
      if (this.skip > 0) {
        const n = Math.min(this.skip, chunk.length - at)
        this.skip -= n
        at += n
        continue
      }
      const n = Math.min(HEADER_BYTES - this.have, chunk.length - at)
      chunk.copy(this.header, this.have, at, at + n)
      this.have += n
      at += n
      if (this.have < HEADER_BYTES) break
      this.have = 0
      const length = this.header.readUInt32BE(0)
      frames.push({ type: frameTypeName(this.header.readUInt8(8)), channel: this.header.readUInt32BE(4), length })
      this.skip = length
    }
    return frames
  }
}

export interface LineSummary {
  /** The message's `type` field ([a-z_] only), or '?' when it is not near the start. */
  type: string
  bytes: number
}

const TYPE_FIELD = /"type"\s*:\s*"([a-z_]{1,40})"/
/** Both ends write `type` first; only this much of a line is kept to find it. */
const HEAD_BYTES = 120

/** NDJSON line types and sizes out of a byte stream. */
export class LineScanner {
  private head = ''
  private bytes = 0

  push(chunk: Buffer): LineSummary[] {
    const lines: LineSummary[] = []
    let start = 0
    for (let nl = chunk.indexOf(0x0a, start); ; nl = chunk.indexOf(0x0a, start)) {
      const end = nl === -1 ? chunk.length : nl
      if (this.head.length < HEAD_BYTES) this.head += chunk.subarray(start, Math.min(end, start + HEAD_BYTES - this.head.length)).toString('latin1')
      this.bytes += end - start
      if (nl === -1) break
      lines.push({ type: TYPE_FIELD.exec(this.head)?.[1] ?? '?', bytes: this.bytes + 1 })
      this.head = ''
      this.bytes = 0
      start = nl + 1
    }
    return lines
  }
}

const traces = { control: debug('stereos:control'), wire: debug('stereos:wire') }

/** `transport`, with each connection traced under `stereos:control` or `stereos:wire` while DEBUG selects it. */
export function traced(transport: Transport, what: 'control' | 'wire', trace: Debug = traces[what]): Transport {
  return {
    kind: transport.kind,
    describe: () => transport.describe(),
    async connect(timeoutMs) {
      const socket = await transport.connect(timeoutMs)
      if (trace.enabled) tap(socket, trace, transport.describe(), what)
      return socket
    },
  }
}

function tap(socket: Duplex, trace: Debug, endpoint: string, what: 'control' | 'wire'): void {
  const describe = (arrow: string) => {
    if (what === 'control') {
      const scanner = new LineScanner()
      return (chunk: Buffer) => {
        for (const line of scanner.push(chunk)) trace(`${endpoint} ${arrow} ${line.type} ${line.bytes} B`)
      }
    }
    const scanner = new FrameHeaderScanner()
    return (chunk: Buffer) => {
      for (const frame of scanner.push(chunk)) trace(`${endpoint} ${arrow} ${frame.type} ch${frame.channel} ${frame.length} B`)
    }
  }
  const sent = describe('→')
  const received = describe('←')
  trace(`${endpoint} connected`)
  socket.once('close', () => trace(`${endpoint} closed`))
  // Observed on the instance, in place: listeners, flow mode and backpressure stay the caller's.
  const write = socket.write.bind(socket) as (...args: unknown[]) => boolean
  socket.write = ((chunk: unknown, ...rest: unknown[]) => {
    if (chunk instanceof Uint8Array) sent(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength))
    else if (typeof chunk === 'string') sent(Buffer.from(chunk))
    return write(chunk, ...rest)
  }) as Duplex['write']
  const emit = socket.emit.bind(socket) as (event: string | symbol, ...args: unknown[]) => boolean
  socket.emit = ((event: string | symbol, ...args: unknown[]) => {
    if (event === 'data' && args[0] instanceof Uint8Array) received(Buffer.from(args[0].buffer, args[0].byteOffset, args[0].byteLength))
    return emit(event, ...args)
  }) as Duplex['emit']
}
