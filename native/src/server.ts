import { EventEmitter } from 'node:events'
import type { Binding, PollHandle } from './binding.js'
import { E, errnoError } from './errors.js'
import { loadBinding } from './load.js'
import { checkU32, VsockSocket, type VsockAddress, type VsockSocketOptions } from './socket.js'

export interface ListenOptions extends VsockSocketOptions {
  /** The local CID to bind (default VMADDR_CID_ANY: every transport; 1 = loopback only). */
  cid?: number
  /** listen(2) backlog (default 128). */
  backlog?: number
  /** SO_VM_SOCKETS_BUFFER_SIZE for accepted connections (kernel default 256 KiB). */
  bufferSize?: number
}

/** Accepts per readable event before yielding to the event loop. */
const ACCEPTS_PER_EVENT = 64
/** Pause after EMFILE/ENFILE (the level-triggered poll would otherwise spin). */
const ACCEPT_BACKOFF_MS = 100

const TEMPORARY_ACCEPT_ERRORS = new Set([-E.ECONNABORTED, -E.EINTR, -E.EPROTO, -E.EPERM])
const RESOURCE_ACCEPT_ERRORS = new Set([-E.EMFILE, -E.ENFILE, -E.ENOBUFS, -E.ENOMEM])

export interface VsockServerEvents {
  connection: [socket: VsockSocket]
  error: [err: Error]
  close: []
}

/**
 * A listening AF_VSOCK socket. Emits 'connection' with a VsockSocket for each accepted peer,
 * 'error' for accept failures (EMFILE, ...; listening continues), and 'close' once close() was
 * called and every connection it accepted has closed (as net.Server).
 */
export class VsockServer extends EventEmitter<VsockServerEvents> {
  private fd: number
  private readonly native: Binding
  private poll: PollHandle | null
  private readonly connections = new Set<VsockSocket>()
  private readonly socketOptions: VsockSocketOptions
  private readonly local: VsockAddress
  private readonly addr = new Uint32Array(2)
  private backoff: NodeJS.Timeout | null = null
  private closing = false
  private refed = true

  /** @internal Use listen(). Takes over a bound, listening, non-blocking AF_VSOCK fd. */
  constructor(fd: number, socketOptions: VsockSocketOptions, local: VsockAddress) {
    super()
    this.native = loadBinding()
    this.fd = fd
    this.socketOptions = socketOptions
    this.local = local
    this.poll = new this.native.Poll(fd, (status, events) => this.onPoll(status, events))
    this.watch()
  }

  /** The bound address; `port` is the kernel's pick when listen() was given port 0. */
  address(): VsockAddress {
    return { ...this.local }
  }

  get listening(): boolean {
    return this.fd >= 0
  }

  /** Open connections accepted by this server. */
  get connectionCount(): number {
    return this.connections.size
  }

  /**
   * Stops accepting and closes the listening socket. 'close' (and `callback`) follow once the
   * accepted connections have closed too; they are not closed here (as net.Server).
   */
  close(callback?: (err?: Error) => void): this {
    if (callback) {
      if (this.fd < 0 && !this.closing) {
        const err = new Error('Server is not running.') as Error & { code: string }
        err.code = 'ERR_SERVER_NOT_RUNNING'
        process.nextTick(callback, err)
      } else this.once('close', () => callback())
    }
    if (this.fd < 0) return this
    this.closing = true
    if (this.backoff) clearTimeout(this.backoff)
    this.backoff = null
    this.poll?.close()
    this.poll = null
    this.native.close(this.fd)
    this.fd = -1
    this.maybeClosed()
    return this
  }

  ref(): this {
    this.refed = true
    this.poll?.ref()
    this.backoff?.ref()
    return this
  }

  unref(): this {
    this.refed = false
    this.poll?.unref()
    this.backoff?.unref()
    return this
  }

  private watch(): void {
    const r = this.poll?.start(this.native.constants.UV_READABLE) ?? 0
    if (r < 0) this.emit('error', errnoError(r, 'uv_poll_start', this.local))
  }

  private maybeClosed(): void {
    if (this.closing && this.fd < 0 && this.connections.size === 0) {
      this.closing = false
      process.nextTick(() => this.emit('close'))
    }
  }

  private onPoll(status: number, _events: number): void {
    if (this.fd < 0) return
    if (status < 0) {
      const so = this.native.soError(this.fd)
      this.emit('error', errnoError(so > 0 ? -so : status, 'accept', this.local))
      if (this.fd >= 0) this.watch()
      return
    }
    for (let i = 0; i < ACCEPTS_PER_EVENT && this.fd >= 0; i++) {
      const fd = this.native.accept(this.fd, this.addr)
      if (fd === -E.EAGAIN) return
      if (fd < 0) {
        if (TEMPORARY_ACCEPT_ERRORS.has(fd)) continue
        if (RESOURCE_ACCEPT_ERRORS.has(fd)) this.pause()
        this.emit('error', errnoError(fd, 'accept', this.local))
        return
      }
      let socket: VsockSocket
      try {
        socket = new VsockSocket(fd, this.socketOptions)
      } catch (err) {
        this.native.close(fd)
        this.emit('error', err as Error)
        continue
      }
      if (socket.remoteCid < 0) {
        socket.remoteCid = this.addr[0]!
        socket.remotePort = this.addr[1]!
      }
      this.connections.add(socket)
      socket.once('close', () => {
        this.connections.delete(socket)
        this.maybeClosed()
      })
      this.emit('connection', socket)
    }
  }

  private pause(): void {
    if (!this.poll || this.backoff) return
    this.poll.stop()
    this.backoff = setTimeout(() => {
      this.backoff = null
      if (this.fd >= 0) this.watch()
    }, ACCEPT_BACKOFF_MS)
    if (!this.refed) this.backoff.unref()
  }
}

/**
 * Listens on `port` (0 = any free port, see address()). Throws synchronously when the address
 * cannot be bound: EADDRINUSE, EACCES (ports below 1024 need CAP_NET_BIND_SERVICE), EAFNOSUPPORT
 * (no vsock in this kernel), EADDRNOTAVAIL (a `cid` that is not this machine's).
 */
export function listen(port: number, options: ListenOptions = {}): VsockServer {
  checkU32('port', port)
  const native = loadBinding()
  const c = native.constants
  const cid = options.cid ?? c.VMADDR_CID_ANY
  checkU32('cid', cid)
  const backlog = options.backlog ?? 128
  const fd = native.socket()
  if (fd < 0) throw errnoError(fd, 'socket')
  const where = { cid, port }
  const fail = (r: number, syscall: string): never => {
    native.close(fd)
    throw errnoError(r, syscall, where)
  }
  let r: number
  if (options.bufferSize !== undefined) {
    // Accepted sockets inherit the listener's buffer size.
    r = native.setBufferSize(fd, options.bufferSize)
    if (r < 0) fail(r, 'setsockopt')
  }
  r = native.bind(fd, cid, port === 0 ? c.VMADDR_PORT_ANY : port)
  if (r < 0) fail(r, 'bind')
  r = native.listen(fd, backlog)
  if (r < 0) fail(r, 'listen')
  const out = new Uint32Array(2)
  r = native.getsockname(fd, out)
  if (r < 0) fail(r, 'getsockname')
  const { cid: _cid, backlog: _backlog, bufferSize: _bufferSize, ...socketOptions } = options
  try {
    return new VsockServer(fd, socketOptions, { cid: out[0]!, port: out[1]! })
  } catch (err) {
    native.close(fd)
    throw err
  }
}
