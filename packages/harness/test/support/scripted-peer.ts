import { createServer, type Server, type Socket } from 'node:net'

/**
 * A stand-in for stereosd's side of one conversation on 127.0.0.1: for every line it receives
 * it writes the next scripted reply (null = stay silent). What it received is kept for asserts.
 */
export interface ScriptedPeer {
  port: number
  received: string[]
  /** Sockets accepted so far. */
  connections: Socket[]
  close(): Promise<void>
}

export type Reply = string | Buffer | null | ((socket: Socket) => void)

export async function scriptedPeer(replies: Reply[]): Promise<ScriptedPeer> {
  const received: string[] = []
  const connections: Socket[] = []
  const queue = [...replies]
  const server: Server = createServer((socket) => {
    connections.push(socket)
    let buffer = ''
    socket.setEncoding('latin1')
    socket.on('error', () => undefined)
    socket.on('data', (chunk: string) => {
      buffer += chunk
      for (let nl = buffer.indexOf('\n'); nl !== -1; nl = buffer.indexOf('\n')) {
        received.push(Buffer.from(buffer.slice(0, nl), 'latin1').toString('utf8'))
        buffer = buffer.slice(nl + 1)
        const reply = queue.shift()
        if (typeof reply === 'function') reply(socket)
        else if (typeof reply === 'string') socket.write(`${reply}\n`)
        else if (reply) socket.write(reply)
      }
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const address = server.address()
  return {
    port: typeof address === 'object' && address ? address.port : 0,
    received,
    connections,
    close: () =>
      new Promise((resolve) => {
        for (const socket of connections) socket.destroy()
        server.close(() => resolve())
      }),
  }
}
