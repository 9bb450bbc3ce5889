import { connect } from 'node:net'
import type { Duplex } from 'node:stream'
import { connectWithin, type Transport } from './transport.js'

/**
 * A guest port reached through a unix socket in the VM dir: the relay in QEMU's private network
 * namespace (vmm/network/relay-main.ts) connects it to QEMU's forward there. Only users who can enter the
 * VM dir (0700: its owner, and root) can connect.
 */
export class UnixTransport implements Transport {
  readonly kind = 'unix'
  constructor(
    readonly path: string,
    /** The guest port behind the socket, for messages. */
    readonly guestPort: number,
  ) {}

  describe(): string {
    return `unix ${this.path} (guest port ${this.guestPort})`
  }

  connect(timeoutMs: number): Promise<Duplex> {
    return connectWithin(connect({ path: this.path }), timeoutMs, this.describe())
  }
}
