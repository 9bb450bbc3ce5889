import { connect, type Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { HarnessError } from '../errors.js'

/** How the host reaches a guest port: TCP through SLIRP, a unix socket relayed into QEMU's private network namespace, or AF_VSOCK. */
export interface Transport {
  readonly kind: 'tcp' | 'vsock' | 'unix'
  /** For messages: `tcp 127.0.0.1:41235`, `unix /run/…/control.sock`, `vsock cid 3 port 1024`. */
  describe(): string
  connect(timeoutMs: number): Promise<Duplex>
}

/** Resolves with the socket once connected; a timeout destroys it and names `what`. */
export function connectWithin(socket: Socket, timeoutMs: number, what: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.destroy()
      reject(new HarnessError('CONTROL_PLANE', `connect to ${what} timed out after ${timeoutMs} ms`))
    }, timeoutMs)
    socket.once('connect', () => {
      clearTimeout(timer)
      resolve(socket)
    })
    socket.once('error', (err) => {
      clearTimeout(timer)
      reject(err)
    })
  })
}

export class TcpTransport implements Transport {
  readonly kind = 'tcp'
  constructor(
    readonly host: string,
    readonly port: number,
  ) {}

  describe(): string {
    return `tcp ${this.host}:${this.port}`
  }

  async connect(timeoutMs: number): Promise<Duplex> {
    const socket = await connectWithin(connect({ host: this.host, port: this.port }), timeoutMs, this.describe())
    socket.setNoDelay(true)
    return socket
  }
}
