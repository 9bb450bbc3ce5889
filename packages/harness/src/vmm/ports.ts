import { createServer } from 'node:net'

/**
 * A free TCP port on 127.0.0.1 (bind :0, read, close), as mb's allocatePort does. There is a
 * window before QEMU binds it; QEMU then fails at start and the boot error says so.
 */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.unref()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      const port = typeof address === 'object' && address ? address.port : 0
      server.close(() => resolve(port))
    })
  })
}
