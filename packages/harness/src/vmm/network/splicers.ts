import { createServer, type Server, type Socket } from 'node:net'

/**
 * Servers that splice each connection they accept into a fresh upstream socket, and the sockets
 * they hold: closed together (QEMU's exit), and unref'd together for a detached VM (connections
 * accepted after that too). Ends travel through pipe() after the data before them; an error on
 * one side destroys the other (as relay-main.ts). Used by host-forwards.ts and host-ports.ts.
 */
export class Splicers {
  private readonly servers: Server[] = []
  private readonly open = new Set<Socket>()
  private held = true

  /** A server, not yet listening, whose connections are spliced into `upstream()`. */
  server(upstream: () => Socket): Server {
    const server = createServer({ allowHalfOpen: true }, (client) => {
      const far = upstream()
      for (const [socket, other] of [
        [client, far],
        [far, client],
      ] as const) {
        this.open.add(socket)
        if (!this.held) socket.unref()
        socket.on('close', () => this.open.delete(socket))
        socket.on('error', () => other.destroy())
      }
      client.pipe(far)
      far.pipe(client)
    })
    this.servers.push(server)
    return server
  }

  /** Stop listening and end every open connection. */
  close(): void {
    for (const server of this.servers) server.close()
    for (const socket of this.open) socket.destroy()
  }

  /** Stop holding this process open: the splices work until it exits. */
  unref(): void {
    this.held = false
    for (const server of this.servers) server.unref()
    for (const socket of this.open) socket.unref()
  }
}
