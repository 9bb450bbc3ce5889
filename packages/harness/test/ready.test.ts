import { createServer, type Server } from 'node:net'
import { afterEach, describe, expect, test } from 'vitest'
import { backoffMs, waitReady } from '../src/control/ready.js'
import { TcpTransport } from '../src/control/transport.js'
import { freePort } from '../src/vmm/ports.js'

let server: Server | undefined
afterEach(() => {
  server?.close()
  server = undefined
})

/** Like SLIRP before the guest listens: accept, then hang up; later answer health with `states`. */
async function bootingGuest(hangups: number, states: string[]): Promise<{ port: number; connections: () => number }> {
  let connections = 0
  server = createServer((socket) => {
    connections++
    if (connections <= hangups) {
      socket.destroy()
      return
    }
    socket.setEncoding('utf8')
    socket.on('data', () => {
      const state = states.length > 1 ? states.shift()! : states[0]!
      socket.write(`${JSON.stringify({ type: 'health', payload: { state, uptime_seconds: 1 } })}\n`)
    })
  })
  await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve))
  const address = server.address()
  return { port: typeof address === 'object' && address ? address.port : 0, connections: () => connections }
}

describe('waitReady', () => {
  test("mb's backoff: 100, 200, 400, 800 ms, then 1 s", () => {
    expect([0, 1, 2, 3, 4, 5].map(backoffMs)).toEqual([100, 200, 400, 800, 1000, 1000])
  })

  test('an accepted connection is not readiness: it keeps trying until health says ready', async () => {
    const guest = await bootingGuest(3, ['booting', 'booting', 'ready'])
    const ready = await waitReady(new TcpTransport('127.0.0.1', guest.port), { deadline: Date.now() + 10_000 })
    expect(ready.health.state).toBe('ready')
    expect(ready.attempts).toBe(4)
    expect(guest.connections()).toBe(4)
    expect(ready.client.closed).toBe(false)
    ready.client.close()
  })

  test('healthy counts as ready', async () => {
    const guest = await bootingGuest(0, ['healthy'])
    const ready = await waitReady(new TcpTransport('127.0.0.1', guest.port), { deadline: Date.now() + 5_000 })
    expect(ready.health.state).toBe('healthy')
    ready.client.close()
  })

  test('a guest that reports shutdown fails at once', async () => {
    const guest = await bootingGuest(0, ['shutdown'])
    await expect(waitReady(new TcpTransport('127.0.0.1', guest.port), { deadline: Date.now() + 5_000 })).rejects.toMatchObject({
      code: 'CONTROL_PLANE',
      message: expect.stringContaining('"shutdown"'),
    })
  })

  test('nobody listening: BOOT_TIMEOUT naming the endpoint and the last error', async () => {
    const port = await freePort()
    const started = Date.now()
    await expect(waitReady(new TcpTransport('127.0.0.1', port), { deadline: Date.now() + 1_500 })).rejects.toMatchObject({
      code: 'BOOT_TIMEOUT',
      message: expect.stringMatching(new RegExp(`tcp 127\\.0\\.0\\.1:${port}.*ECONNREFUSED`)),
    })
    expect(Date.now() - started).toBeLessThan(5_000)
  })

  test('the abort signal ends the wait with its reason (QEMU exited)', async () => {
    const port = await freePort()
    const abort = new AbortController()
    setTimeout(() => abort.abort(new Error('QEMU exited with code 1')), 300)
    await expect(waitReady(new TcpTransport('127.0.0.1', port), { deadline: Date.now() + 60_000, signal: abort.signal })).rejects.toThrow(
      'QEMU exited with code 1',
    )
  })
})
