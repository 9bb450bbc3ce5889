import { afterEach, describe, expect, test } from 'vitest'
import { StereosdClient } from '../src/control/client.js'
import { MAX_LINE_BYTES } from '../src/control/line-codec.js'
import { TcpTransport } from '../src/control/transport.js'
import { scriptedPeer, type ScriptedPeer } from './support/scripted-peer.js'

let peer: ScriptedPeer | undefined
afterEach(async () => {
  await peer?.close()
  peer = undefined
})

async function connect(replies: Parameters<typeof scriptedPeer>[0]): Promise<StereosdClient> {
  peer = await scriptedPeer(replies)
  return new StereosdClient(await new TcpTransport('127.0.0.1', peer.port).connect(2_000), 'scripted peer')
}

const PONG = '{"type":"pong"}'

describe('StereosdClient', () => {
  test('refuses to send a request line of 1 MiB or more, and the connection stays usable', async () => {
    const client = await connect([PONG])
    const huge = 'x'.repeat(MAX_LINE_BYTES)
    await expect(client.setConfig(huge)).rejects.toMatchObject({ code: 'REQUEST_TOO_LARGE', message: expect.stringContaining('1048576') })
    await expect(client.ping()).resolves.toBeUndefined()
    expect(peer!.received).toEqual(['{"type":"ping"}'])
  })

  test('a reply line over 1 MiB fails that request without buffering it, and the next request works', async () => {
    const big = Buffer.alloc(MAX_LINE_BYTES + 10, 0x61)
    const client = await connect([Buffer.concat([big, Buffer.from('\n')]), PONG])
    await expect(client.ping()).rejects.toMatchObject({ code: 'PROTOCOL', message: expect.stringContaining(`${MAX_LINE_BYTES + 10} bytes`) })
    await expect(client.ping()).resolves.toBeUndefined()
  })

  test('queues concurrent requests: one in flight, replies matched in order', async () => {
    const client = await connect([
      PONG,
      '{"type":"health","payload":{"state":"booting","uptime_seconds":0}}',
      '{"type":"ack","payload":{"reply_to":"set_config","ok":true}}',
    ])
    const [a, b, c] = await Promise.all([client.ping(), client.health(), client.setConfig('a = 1\n')])
    expect(a).toBeUndefined()
    expect(b.state).toBe('booting')
    expect(c).toBeUndefined()
    expect(peer!.received.map((l) => JSON.parse(l).type)).toEqual(['ping', 'get_health', 'set_config'])
  })

  test('a silent peer times the request out and spends the connection', async () => {
    const client = await connect([null])
    await expect(client.ping({ timeoutMs: 200 })).rejects.toMatchObject({
      code: 'CONTROL_PLANE',
      message: expect.stringContaining('did not answer ping within 200 ms'),
    })
    expect(client.closed).toBe(true)
  })

  test('a peer that hangs up mid-request fails it with CONTROL_PLANE', async () => {
    const client = await connect([(socket) => socket.destroy()])
    await expect(client.ping()).rejects.toMatchObject({ code: 'CONTROL_PLANE', message: expect.stringContaining('closed') })
  })

  test('an unsolicited reply is reported on the next request instead of answering it', async () => {
    const client = await connect([PONG])
    peer!.connections[0]!.write('{"type":"ack","payload":{"reply_to":"mount","ok":true}}\n')
    await new Promise((resolve) => setTimeout(resolve, 100))
    await expect(client.ping()).rejects.toMatchObject({ code: 'PROTOCOL', message: expect.stringContaining('nobody asked for') })
    await expect(client.ping()).resolves.toBeUndefined()
  })

  test('a reply with the right type but a malformed payload is a protocol error', async () => {
    const client = await connect(['{"type":"health","payload":{"state":"ready"}}'])
    await expect(client.health()).rejects.toMatchObject({ code: 'PROTOCOL', message: expect.stringContaining('uptime_seconds') })
  })
})
