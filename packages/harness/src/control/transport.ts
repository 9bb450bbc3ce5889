import { connect } from 'node:net'
import type { Duplex } from 'node:stream'
import { HarnessError } from '../errors.js'

/** How the host reaches stereosd's port 1024: TCP through SLIRP here, AF_VSOCK on KVM hosts. */
export interface Transport {
  readonly kind: 'tcp' | 'vsock'
  /** For messages: `tcp 127.0.0.1:41235`, `vsock cid 3 port 1024`. */
  describe(): string
  connect(timeoutMs: number): Promise<Duplex>
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

  connect(timeoutMs: number): Promise<Duplex> {
    return new Promise((resolve, reject) => {
      const socket = connect({ host: this.host, port: this.port })
      const timer = setTimeout(() => {
        socket.destroy()
        reject(new HarnessError('CONTROL_PLANE', `connect to ${this.describe()} timed out after ${timeoutMs} ms`))
      }, timeoutMs)
      socket.once('connect', () => {
        clearTimeout(timer)
        socket.setNoDelay(true)
        resolve(socket)
      })
      socket.once('error', (err) => {
        clearTimeout(timer)
        reject(err)
      })
    })
  }
}
