import type { Duplex } from 'node:stream'
import { HarnessError } from '../errors.js'
import type { Transport } from './transport.js'
import { loadVsock, type LoadVsock } from './vsock-module.js'

/** stereosd's control port, the same number on vsock as behind the TCP forward. */
export const CONTROL_VSOCK_PORT = 1024

/** AF_VSOCK straight to the guest's CID: no port forward, works with network.mode 'none'. */
export class VsockTransport implements Transport {
  readonly kind = 'vsock'
  constructor(
    readonly cid: number,
    readonly port: number = CONTROL_VSOCK_PORT,
    private readonly load: LoadVsock = loadVsock,
  ) {}

  describe(): string {
    return `vsock cid ${this.cid} port ${this.port}`
  }

  async connect(timeoutMs: number): Promise<Duplex> {
    const vsock = await this.load()
    try {
      return await vsock.connect(this.cid, this.port, { timeoutMs })
    } catch (err) {
      // Same shape as TcpTransport's timeout, so waitReady treats both alike (retry).
      if ((err as NodeJS.ErrnoException).code === 'ETIMEDOUT') {
        throw new HarnessError('CONTROL_PLANE', `connect to ${this.describe()} timed out after ${timeoutMs} ms`, { cause: err })
      }
      throw err
    }
  }
}
