import { chmodSync, rmSync } from 'node:fs'
import { connect } from 'node:net'
import { join } from 'node:path'
import { HarnessError } from '../../errors.js'
import type { GuestForward } from '../argv.js'
import { entryScript } from '../../host/entry-script.js'
import { Splicers } from './splicers.js'

/**
 * network.hostPorts: the guest reaches a declared TCP port on the host's 127.0.0.1 as
 * `host.stereos.internal:<port>`, and no other. The path of one connection:
 *
 *   guest → 10.0.2.100:<port> → QEMU's SLIRP guestfwd → `node unix-stdio.js --guest <socket>`
 *   (one per connection, spawned by QEMU) → `<vmDir>/host-port-<port>.sock` → the harness
 *   (in the host's network namespace) → 127.0.0.1:<port>
 *
 * SLIRP answers ARP and connections at HOST_ADDRESS only for the declared ports; everything
 * else the guest sends to the host's addresses is refused by restrict=on (QEMU in the host's
 * network namespace) or lands on the private namespace's own loopback. The unix socket is what
 * crosses out of that namespace, so the same path works in both.
 */
export const HOST_NAME = 'host.stereos.internal'
/** In SLIRP's 10.0.2.0/24, outside its DHCP range (.15–.30), not the host (.2) or DNS (.3) alias. */
export const HOST_ADDRESS = '10.0.2.100'

export interface HostPortSpec {
  /** The port on the host's 127.0.0.1 (and at HOST_ADDRESS in the guest). */
  port: number
  /** Where the harness listens for QEMU's per-connection command. */
  socket: string
}

export interface HostPortsPlan {
  qemu: GuestForward[]
  listen: HostPortSpec[]
}

/** QEMU's guestfwd rules and the harness's sockets for the declared ports of the VM in `vmDir`. */
export function planHostPorts(ports: readonly number[], vmDir: string, script = entryScript('vmm/network/unix-stdio')): HostPortsPlan {
  const listen = ports.map((port) => ({ port, socket: join(vmDir, `host-port-${port}.sock`) }))
  const qemu = listen.map((spec) => ({ addr: HOST_ADDRESS, port: spec.port, command: [process.execPath, script, '--guest', spec.socket] }))
  return { qemu, listen }
}

export interface HostPortListeners {
  /** Stops listening and ends open connections (QEMU's exit calls it). */
  stop(): void
  /** Stop holding this process open (a detached VM): the ports work until this process exits. */
  unref(): void
}

/**
 * Open connections per declared port. QEMU starts one command process per guest connection
 * before it reaches the socket; past the cap the socket closes at once and the process exits, so
 * what a guest can hold open on the host is bounded (its rate of new connections is not).
 */
export const HOST_PORT_MAX_CONNECTIONS = 64

/** Listen on each spec's socket and splice every connection into 127.0.0.1:<port>, at most `maxConnections` at once per port. */
export async function listenHostPorts(specs: readonly HostPortSpec[], maxConnections = HOST_PORT_MAX_CONNECTIONS): Promise<HostPortListeners> {
  const splicers = new Splicers()
  try {
    for (const spec of specs) await listenOne(spec, splicers, maxConnections)
  } catch (err) {
    splicers.close()
    throw err
  }
  return { stop: () => splicers.close(), unref: () => splicers.unref() }
}

function listenOne(spec: HostPortSpec, splicers: Splicers, maxConnections: number): Promise<void> {
  rmSync(spec.socket, { force: true })
  const server = splicers.server(() => connect({ host: '127.0.0.1', port: spec.port, allowHalfOpen: true }).setNoDelay(true))
  server.maxConnections = maxConnections
  return new Promise((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      reject(
        new HarnessError('HOST', `network.hostPorts: cannot listen on ${spec.socket} for host port ${spec.port} (${err.code ?? err.message})`, {
          fix: 'check that the runtime directory is writable and its path short enough for a unix socket (options.runtimeDir)',
          cause: err,
        }),
      )
    })
    server.listen(spec.socket, () => {
      // The VM dir (0700) already keeps other users out; 0600 says so on the socket itself.
      chmodSync(spec.socket, 0o600)
      resolve()
    })
  })
}
