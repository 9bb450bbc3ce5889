import { createServer, type Server, type Socket } from 'node:net'
import { AgentClient } from '../../src/agent-client/client.js'
import { TcpTransport } from '../../src/control/transport.js'
import { helloAsGuest } from '../../src/wire/hello.js'
import type { OpName } from '../../src/wire/messages.js'
import { WirePeer } from '../../src/wire/peer.js'

/** What a forged agent answers, per op; an op it lacks is refused. */
export type ForgedHandlers = Partial<Record<OpName, (args: Record<string, unknown>, peer: WirePeer) => Promise<unknown>>>

export interface ForgedAgent {
  port: number
  /** Ops received, in order. */
  ops: OpName[]
  connect(): Promise<AgentClient>
  close(): Promise<void>
}

const TOKEN = 'f'.repeat(64)

/**
 * A hostile guest agent on 127.0.0.1: the real handshake and wire codec, with answers the test
 * scripts (a listing that lies, a read that sends more than it announced, …).
 */
export async function forgedAgent(handlers: ForgedHandlers): Promise<ForgedAgent> {
  const ops: OpName[] = []
  const sockets: Socket[] = []
  const server: Server = createServer((socket) => {
    sockets.push(socket)
    socket.on('error', () => undefined)
    const info = {
      agentVersion: 'forged',
      node: process.version,
      arch: 'x86_64',
      pid: process.pid,
      user: 'root',
      root: true,
      listen: 'tcp',
      execPath: process.execPath,
    }
    void helloAsGuest(socket, TOKEN, info, 5_000).then(
      ({ leftover, decoder }) => {
        new WirePeer(
          socket,
          {
            onRequest: (op, args, peer) => {
              ops.push(op)
              const handler = handlers[op]
              return handler ? handler(args as Record<string, unknown>, peer) : Promise.reject(new Error(`forged agent has no ${op}`))
            },
          },
          leftover,
          decoder,
        )
        socket.resume()
      },
      () => socket.destroy(),
    )
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const address = server.address()
  const port = typeof address === 'object' && address ? address.port : 0
  return {
    port,
    ops,
    connect: () => AgentClient.connect(new TcpTransport('127.0.0.1', port), TOKEN, 5_000),
    close: () =>
      new Promise((resolve) => {
        for (const socket of sockets) socket.destroy()
        server.close(() => resolve())
      }),
  }
}
