import { connect } from 'node:net'
import { HarnessError } from '../../errors.js'
import { Splicers } from './splicers.js'

/**
 * The user's own `network.forwards` for a QEMU in a private network namespace: what they ask
 * for is a port on the host's 127.0.0.1 (like any local service, open to local users), so the
 * harness listens there itself and splices each connection into the relay's unix socket for
 * that forward. The control plane, agent and sshd get no such listener.
 */
export interface HostForwarder {
  /** Stops listening and ends open connections (QEMU's exit calls it). */
  close(): void
  /** Stop holding this process open (a detached VM): the forwards still work until it exits. */
  unref(): void
}

export interface HostForwardSpec {
  /** Port on the host's 127.0.0.1 (network.forwards[i].host). */
  port: number
  /** The relay's unix socket for it. */
  socket: string
  /** For messages: `options.network.forwards.0`. */
  option: string
}

export async function listenHostForwards(specs: HostForwardSpec[]): Promise<HostForwarder> {
  const splicers = new Splicers()
  try {
    for (const spec of specs) await listenOne(spec, splicers)
  } catch (err) {
    splicers.close()
    throw err
  }
  return { close: () => splicers.close(), unref: () => splicers.unref() }
}

function listenOne(spec: HostForwardSpec, splicers: Splicers): Promise<void> {
  const server = splicers.server(() => connect({ path: spec.socket, allowHalfOpen: true }))
  return new Promise((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      reject(
        new HarnessError('INVALID_OPTIONS', `${spec.option}.host: port ${spec.port} on 127.0.0.1 cannot be listened on (${err.code ?? err.message})`, {
          fix: 'pick a free port for the forward',
          cause: err,
        }),
      )
    })
    server.listen({ host: '127.0.0.1', port: spec.port }, () => resolve())
  })
}
