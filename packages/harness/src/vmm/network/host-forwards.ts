import { connect, createServer, type Server, type Socket } from 'node:net'
import { HarnessError } from '../../errors.js'

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
  const servers: Server[] = []
  const open = new Set<Socket>()
  const holding = { held: true }
  const close = () => {
    for (const server of servers) server.close()
    for (const socket of open) socket.destroy()
  }
  try {
    for (const spec of specs) servers.push(await listenOne(spec, open, holding))
  } catch (err) {
    close()
    throw err
  }
  const unref = () => {
    holding.held = false
    for (const server of servers) server.unref()
    for (const socket of open) socket.unref()
  }
  return { close, unref }
}

function listenOne(spec: HostForwardSpec, open: Set<Socket>, holding: { held: boolean }): Promise<Server> {
  // Ends travel through pipe() after the data before them; an error destroys the other side (as relay-main.ts).
  const server = createServer({ allowHalfOpen: true }, (client) => {
    const upstream = connect({ path: spec.socket, allowHalfOpen: true })
    for (const [socket, other] of [
      [client, upstream],
      [upstream, client],
    ] as const) {
      open.add(socket)
      // Connections made after unref() do not hold this process open either.
      if (!holding.held) socket.unref()
      socket.on('close', () => open.delete(socket))
      socket.on('error', () => other.destroy())
    }
    client.pipe(upstream)
    upstream.pipe(client)
  })
  return new Promise((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      reject(
        new HarnessError('INVALID_OPTIONS', `${spec.option}.host: port ${spec.port} on 127.0.0.1 cannot be listened on (${err.code ?? err.message})`, {
          fix: 'pick a free port for the forward',
          cause: err,
        }),
      )
    })
    server.listen({ host: '127.0.0.1', port: spec.port }, () => resolve(server))
  })
}
