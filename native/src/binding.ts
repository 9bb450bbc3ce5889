/**
 * The native layer (src/vsock.cc) as TypeScript sees it. Every function is one or two system
 * calls; results are `>= 0` on success and `-errno` on failure (nothing on the data path throws).
 */
export interface PollHandle {
  /** Watch for `events` (UV_READABLE | UV_WRITABLE | UV_DISCONNECT); 0 stops. Returns 0 or a libuv error. */
  start(events: number): number
  stop(): number
  /** Releases the libuv handle. Call before closing the fd. */
  close(): void
  ref(): void
  unref(): void
}

export interface PollConstructor {
  /**
   * `callback(status, events)`: status < 0 is a libuv error, after which the handle is stopped
   * (on a socket, SO_ERROR says why).
   */
  new (fd: number, callback: (status: number, events: number) => void): PollHandle
}

export interface NativeConstants {
  AF_VSOCK: number
  VMADDR_CID_ANY: number
  VMADDR_CID_HYPERVISOR: number
  VMADDR_CID_LOCAL: number
  VMADDR_CID_HOST: number
  VMADDR_PORT_ANY: number
  UV_READABLE: number
  UV_WRITABLE: number
  UV_DISCONNECT: number
  SHUT_RD: number
  SHUT_WR: number
  SHUT_RDWR: number
  NAPI_VERSION: number
  IOV_MAX: number
}

export interface Binding {
  socket(): number
  /** A connected, non-blocking AF_UNIX stream pair (tests drive the stream code with it). */
  socketpair(out: Int32Array): number
  bind(fd: number, cid: number, port: number): number
  listen(fd: number, backlog: number): number
  /** out = [peer cid, peer port]; returns the new non-blocking, close-on-exec fd. */
  accept(fd: number, out: Uint32Array): number
  /** 0 when connected at once, -EINPROGRESS while pending. */
  connect(fd: number, cid: number, port: number): number
  getsockname(fd: number, out: Uint32Array): number
  getpeername(fd: number, out: Uint32Array): number
  read(fd: number, buffer: Uint8Array, offset: number, length: number): number
  write(fd: number, buffer: Uint8Array, offset: number, length: number): number
  writev(fd: number, buffers: Uint8Array[]): number
  shutdown(fd: number, how: number): number
  close(fd: number): number
  /** SO_ERROR: the pending error as a positive errno (0 = none), or -errno. */
  soError(fd: number): number
  setConnectTimeout(fd: number, ms: number): number
  setBufferSize(fd: number, bytes: number): number
  localCid(): number
  openVhost(path: string, cloexec: boolean): number
  setGuestCid(fd: number, cid: number): number
  Poll: PollConstructor
  constants: NativeConstants
}
