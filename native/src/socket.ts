import { Duplex } from 'node:stream'
import type { Binding, PollHandle } from './binding.js'
import { E, errnoError, type ErrnoError } from './errors.js'
import { loadBinding } from './load.js'

/** Bytes asked for per read(2). Chunks of at least COPY_LIMIT bytes are handed over without a copy. */
const READ_SIZE = 64 * 1024
const COPY_LIMIT = 16 * 1024
/** Reads per readable event before yielding to the event loop (libuv's stream reader uses 32 too). */
const READS_PER_EVENT = 32
/** Default connect timeout; also set as the kernel's SO_VM_SOCKETS_CONNECT_TIMEOUT (default 2 s). */
export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000

/** One read buffer shared by all sockets: reads are synchronous, so it is free between them. */
let scratch: Buffer | undefined

export interface VsockSocketOptions {
  /**
   * Keep the writable side open after the peer's EOF (default false, as net.Socket: on EOF the
   * socket ends its own side once the buffered writes are out).
   */
  allowHalfOpen?: boolean
  readableHighWaterMark?: number
  writableHighWaterMark?: number
}

export interface ConnectOptions extends VsockSocketOptions {
  /** Give up with ETIMEDOUT after this long (default 10 s). */
  timeoutMs?: number
  /** SO_VM_SOCKETS_BUFFER_SIZE: the receive buffer the peer may fill (kernel default 256 KiB). */
  bufferSize?: number
}

export interface VsockAddress {
  cid: number
  port: number
}

const kConnecting = Symbol('connecting')
const kStartConnect = Symbol('startConnect')
type InternalOptions = VsockSocketOptions & { [kConnecting]?: boolean }

interface Connecting {
  cid: number
  port: number
  resolve: () => void
  reject: (err: Error) => void
  timer: NodeJS.Timeout
}

interface PendingWrite {
  bufs: Buffer[]
  cb: (err?: Error | null) => void
}

/**
 * An AF_VSOCK stream connection as a Node Duplex. The fd is non-blocking and watched by one
 * libuv poll handle: readable only while the stream wants data (push() returning false stops
 * it, _read resumes it), writable only while a write waits for kernel buffer space. end() sends
 * shutdown(SHUT_WR); the peer's EOF ends the readable side.
 *
 * Errors carry Node's `code` / `errno` / `syscall` (ECONNRESET, EPIPE, ...).
 */
export class VsockSocket extends Duplex {
  /** The peer's CID and port (-1 when unknown, e.g. a wrapped non-vsock fd). */
  remoteCid = -1
  remotePort = -1
  /**
   * This end's CID and port (-1 when unknown). A client socket's CID is VMADDR_CID_ANY (2^32-1)
   * only when the kernel would not say which CID it speaks from (/dev/vsock unreadable).
   */
  localCid = -1
  localPort = -1
  bytesRead = 0
  bytesWritten = 0

  private fd: number
  private readonly native: Binding
  private poll: PollHandle | null
  private events = 0
  private wantRead = false
  private pending: PendingWrite | null = null
  private connecting: Connecting | null = null
  private errorEvents = 0
  private refed = true

  /**
   * Wraps a connected, non-blocking stream socket fd; the socket owns it from here on (closes
   * it on destroy). connect() and the server's connections are made this way.
   */
  constructor(fd: number, options: VsockSocketOptions = {}) {
    const opts = options as InternalOptions
    super({
      allowHalfOpen: opts.allowHalfOpen ?? false,
      ...(opts.readableHighWaterMark !== undefined ? { readableHighWaterMark: opts.readableHighWaterMark } : {}),
      ...(opts.writableHighWaterMark !== undefined ? { writableHighWaterMark: opts.writableHighWaterMark } : {}),
    })
    this.native = loadBinding()
    this.fd = fd
    this.poll = new this.native.Poll(fd, (status, events) => this.onPoll(status, events))
    if (!opts[kConnecting]) {
      this.fillAddresses()
      this.read(0)
    }
  }

  /** The local address, as net.Socket#address(). */
  address(): VsockAddress {
    return { cid: this.localCid, port: this.localPort }
  }

  /** The underlying fd (-1 once destroyed). For diagnostics; do not read or write it. */
  get fileDescriptor(): number {
    return this.fd
  }

  /** Let the process exit while this socket is open (as net.Socket#unref). */
  unref(): this {
    this.refed = false
    this.poll?.unref()
    this.connecting?.timer.unref()
    return this
  }

  ref(): this {
    this.refed = true
    this.poll?.ref()
    this.connecting?.timer.ref()
    return this
  }

  /** @internal Starts a non-blocking connect; resolves once established. On failure the socket is destroyed. */
  [kStartConnect](cid: number, port: number, timeoutMs: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.native.setConnectTimeout(this.fd, timeoutMs)
      const r = this.native.connect(this.fd, cid, port)
      if (r !== 0 && r !== -E.EINPROGRESS) {
        this.destroy()
        reject(connectError(r, cid, port))
        return
      }
      const timer = setTimeout(() => this.connectFailed(-E.ETIMEDOUT), timeoutMs)
      if (!this.refed) timer.unref()
      this.connecting = { cid, port, resolve, reject, timer }
      if (r === 0) this.finishConnect()
      else this.updatePoll()
    })
  }

  override _read(): void {
    if (this.wantRead) return
    this.wantRead = true
    this.updatePoll()
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.pending = { bufs: [chunk], cb }
    this.flush()
    this.updatePoll()
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, cb: (err?: Error | null) => void): void {
    this.pending = { bufs: chunks.map((c) => c.chunk), cb }
    this.flush()
    this.updatePoll()
  }

  override _final(cb: (err?: Error | null) => void): void {
    if (this.fd < 0) return cb()
    const r = this.native.shutdown(this.fd, this.native.constants.SHUT_WR)
    // ENOTCONN: the peer already tore the connection down; there is nothing left to shut.
    if (r < 0 && r !== -E.ENOTCONN) return cb(this.error(r, 'shutdown'))
    cb()
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.pending = null
    this.wantRead = false
    if (this.connecting) {
      const c = this.connecting
      this.connecting = null
      clearTimeout(c.timer)
      c.reject(err ?? connectError(-E.ECONNABORTED, c.cid, c.port))
    }
    if (this.poll) {
      this.poll.close()
      this.poll = null
    }
    if (this.fd >= 0) {
      this.native.close(this.fd)
      this.fd = -1
    }
    this.events = 0
    cb(err)
  }

  private fillAddresses(): number {
    const out = new Uint32Array(2)
    if (this.native.getsockname(this.fd, out) === 0) {
      this.localCid = out[0]!
      this.localPort = out[1]!
    }
    const r = this.native.getpeername(this.fd, out)
    if (r === 0) {
      this.remoteCid = out[0]!
      this.remotePort = out[1]!
    }
    // A connecting socket is auto-bound to VMADDR_CID_ANY and getsockname() keeps saying so;
    // the CID it actually speaks from is the loopback CID, or this machine's CID (/dev/vsock).
    const c = this.native.constants
    if (r === 0 && this.localCid === c.VMADDR_CID_ANY) {
      if (this.remoteCid === c.VMADDR_CID_LOCAL) this.localCid = c.VMADDR_CID_LOCAL
      else {
        const own = this.native.localCid()
        if (own >= 0 && own !== c.VMADDR_CID_ANY) this.localCid = own
      }
    }
    return r
  }

  private error(errno: number, syscall: string): ErrnoError {
    return this.remoteCid >= 0 ? errnoError(errno, syscall, { cid: this.remoteCid, port: this.remotePort }) : errnoError(errno, syscall)
  }

  private updatePoll(): void {
    if (!this.poll) return
    const c = this.native.constants
    let want = 0
    if (this.connecting || this.pending) want |= c.UV_WRITABLE
    if (this.wantRead && !this.connecting) want |= c.UV_READABLE
    if (want === this.events) return
    const r = this.poll.start(want)
    if (r < 0) {
      this.destroy(this.error(r, 'uv_poll_start'))
      return
    }
    this.events = want
  }

  private onPoll(status: number, events: number): void {
    if (this.fd < 0) return
    const c = this.native.constants
    if (status < 0) {
      // libuv saw POLLERR and stopped the handle; the socket's pending error says what happened.
      this.events = 0
      const so = this.native.soError(this.fd)
      if (so > 0) {
        if (this.connecting) return this.connectFailed(-so)
        this.destroy(this.error(-so, this.pending ? 'write' : 'read'))
        return
      }
      // Nothing pending (consumed elsewhere): let the next read/write report the state.
      if (++this.errorEvents > 8) {
        this.destroy(this.error(status, 'poll'))
        return
      }
      events = c.UV_READABLE | c.UV_WRITABLE
    } else {
      this.errorEvents = 0
    }
    if (this.connecting) {
      if (events & c.UV_WRITABLE) this.finishConnect()
      return
    }
    if (events & c.UV_WRITABLE && this.pending) this.flush()
    if (events & (c.UV_READABLE | c.UV_DISCONNECT) && this.wantRead) this.readLoop()
    this.updatePoll()
  }

  private finishConnect(): void {
    const conn = this.connecting
    if (!conn) return
    const so = this.native.soError(this.fd)
    if (so !== 0) return this.connectFailed(so > 0 ? -so : so)
    const r = this.fillAddresses()
    if (r < 0) return this.connectFailed(r === -E.ENOTCONN ? -E.ECONNREFUSED : r)
    this.connecting = null
    clearTimeout(conn.timer)
    this.updatePoll()
    conn.resolve()
    this.read(0)
  }

  private connectFailed(errno: number): void {
    const conn = this.connecting
    if (!conn) return
    this.connecting = null
    clearTimeout(conn.timer)
    this.destroy()
    conn.reject(connectError(errno, conn.cid, conn.port))
  }

  private readLoop(): void {
    const native = this.native
    for (let i = 0; i < READS_PER_EVENT && this.wantRead && this.fd >= 0; i++) {
      const buf = (scratch ??= Buffer.allocUnsafeSlow(READ_SIZE))
      const n = native.read(this.fd, buf, 0, READ_SIZE)
      if (n < 0) {
        if (n === -E.EAGAIN) return
        this.destroy(this.error(n, 'read'))
        return
      }
      if (n === 0) {
        this.wantRead = false
        this.push(null)
        return
      }
      let chunk: Buffer
      if (n >= COPY_LIMIT) {
        chunk = buf.subarray(0, n)
        scratch = undefined
      } else {
        chunk = Buffer.allocUnsafe(n)
        buf.copy(chunk, 0, 0, n)
      }
      this.bytesRead += n
      if (!this.push(chunk)) {
        this.wantRead = false
        return
      }
      // A short read drained the socket; the level-triggered poll reports the next data.
      if (n < READ_SIZE) return
    }
  }

  /** Writes as much of the pending write as the kernel takes; completes it when all is out. */
  private flush(): void {
    const p = this.pending
    if (!p || this.fd < 0) return
    const native = this.native
    while (p.bufs.length > 0) {
      let attempted = 0
      let n: number
      if (p.bufs.length === 1) {
        const b = p.bufs[0]!
        attempted = b.length
        n = native.write(this.fd, b, 0, b.length)
      } else {
        const count = Math.min(p.bufs.length, native.constants.IOV_MAX)
        for (let i = 0; i < count; i++) attempted += p.bufs[i]!.length
        n = native.writev(this.fd, count === p.bufs.length ? p.bufs : p.bufs.slice(0, count))
      }
      if (n < 0) {
        if (n === -E.EAGAIN) return
        this.pending = null
        p.cb(this.error(n, 'write'))
        return
      }
      this.bytesWritten += n
      let left = n
      while (left > 0 && p.bufs.length > 0) {
        const b = p.bufs[0]!
        if (b.length <= left) {
          left -= b.length
          p.bufs.shift()
        } else {
          p.bufs[0] = b.subarray(left)
          left = 0
        }
      }
      while (p.bufs.length > 0 && p.bufs[0]!.length === 0) p.bufs.shift()
      // The kernel buffer is full: wait for the poll to report writable.
      if (n < attempted && p.bufs.length > 0) return
    }
    this.pending = null
    p.cb()
  }
}

function connectError(errno: number, cid: number, port: number): ErrnoError {
  // A vsock transport answers a connect to a port nobody listens on with a reset (the kernel then
  // reports ECONNRESET); during a connect that is a refusal, as TCP reports it.
  if (errno === -E.ECONNRESET) {
    return errnoError(-E.ECONNREFUSED, 'connect', { cid, port, detail: 'connection refused: the peer reset the connection request' })
  }
  return errnoError(errno, 'connect', { cid, port })
}

/**
 * Connects to `port` on `cid` (VMADDR_CID_HOST = 2 from a guest, a guest's CID from the host,
 * VMADDR_CID_LOCAL = 1 for loopback). Rejects with ECONNREFUSED, ETIMEDOUT, ENODEV (no transport
 * reaches that CID), EAFNOSUPPORT (no vsock in this kernel), ...
 */
export async function connect(cid: number, port: number, options: ConnectOptions = {}): Promise<VsockSocket> {
  checkU32('cid', cid)
  checkU32('port', port)
  const timeoutMs = options.timeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS
  if (!(timeoutMs > 0) || !Number.isFinite(timeoutMs)) throw new RangeError(`timeoutMs must be a positive number, got ${timeoutMs}`)
  const native = loadBinding()
  const fd = native.socket()
  if (fd < 0) throw errnoError(fd, 'socket')
  if (options.bufferSize !== undefined) {
    const r = native.setBufferSize(fd, options.bufferSize)
    if (r < 0) {
      native.close(fd)
      throw errnoError(r, 'setsockopt', { cid, port, detail: `SO_VM_SOCKETS_BUFFER_SIZE ${options.bufferSize}` })
    }
  }
  let socket: VsockSocket
  try {
    const { timeoutMs: _t, bufferSize: _b, ...socketOptions } = options
    socket = new VsockSocket(fd, { ...socketOptions, [kConnecting]: true } as VsockSocketOptions)
  } catch (err) {
    native.close(fd)
    throw err
  }
  await socket[kStartConnect](cid, port, Math.ceil(timeoutMs))
  return socket
}

export function checkU32(name: string, v: number): void {
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new RangeError(`${name} must be an integer in [0, 2^32-1], got ${v}`)
}
