import { randomBytes } from 'node:crypto'
import { duplexPair } from 'node:stream'
import { describe, expect, test } from 'vitest'
import { encodeFrame, FrameDecoder, FrameType, HEADER_BYTES } from '../src/wire/frame.js'
import { helloAsGuest, helloAsHost } from '../src/wire/hello.js'
import { encodeMessage, WirePeer } from '../src/wire/peer.js'
import { WireError } from '../src/wire/wire-error.js'

const info = { agentVersion: 't', node: process.version, arch: process.arch, pid: 1, user: 'u', root: false, listen: 'tcp', execPath: '/usr/bin/node' }

describe('FrameDecoder', () => {
  test('reassembles frames split at every byte boundary, several per chunk', () => {
    const frames = [encodeFrame(0, FrameType.MESSAGE, Buffer.from('abc')), encodeFrame(7, FrameType.DATA, randomBytes(300)), encodeFrame(7, FrameType.END)]
    const all = Buffer.concat(frames)
    for (let split = 0; split <= all.length; split++) {
      const decoder = new FrameDecoder({ maxPayload: 1024 })
      const out = [...decoder.push(all.subarray(0, split)), ...decoder.push(all.subarray(split))]
      expect(out.map((f) => [f.channel, f.type, f.payload.length])).toEqual([
        [0, FrameType.MESSAGE, 3],
        [7, FrameType.DATA, 300],
        [7, FrameType.END, 0],
      ])
      expect(decoder.pending).toBe(0)
    }
  })

  test('an oversized length is refused from the header alone, before its payload is buffered', () => {
    const decoder = new FrameDecoder({ maxPayload: 1024 })
    const header = encodeFrame(3, FrameType.DATA, Buffer.alloc(0))
    header.writeUInt32BE(0xffffffff, 0)
    expect(() => decoder.push(header)).toThrow(/4294967295 bytes on channel 3 exceeds the 1024-byte limit/)
    expect(decoder.pending).toBe(0)
    // A failed decoder stays failed: no resynchronising on garbage.
    expect(() => decoder.push(encodeFrame(0, FrameType.END))).toThrow(WireError)
  })

  test('an unknown frame type is an error', () => {
    const frame = encodeFrame(1, FrameType.DATA, Buffer.from('x'))
    frame.writeUInt8(99, 8)
    expect(() => new FrameDecoder().push(frame)).toThrow(/unknown frame type 99/)
  })

  test('fuzz: random, truncated and oversized input yields frames or a WireError, never anything else, and memory stays bounded', () => {
    const limit = 4096
    let errors = 0
    let frames = 0
    for (let round = 0; round < 3000; round++) {
      const decoder = new FrameDecoder({ maxPayload: limit })
      const parts: Buffer[] = []
      for (let i = 0; i < 1 + (round % 5); i++) {
        const kind = Math.random()
        if (kind < 0.4)
          parts.push(
            encodeFrame(Math.floor(Math.random() * 10), (1 + Math.floor(Math.random() * 6)) as FrameType, randomBytes(Math.floor(Math.random() * limit))),
          )
        else if (kind < 0.6) parts.push(encodeFrame(1, FrameType.DATA, randomBytes(100)).subarray(0, Math.floor(Math.random() * 109)))
        else parts.push(randomBytes(Math.floor(Math.random() * 2 * limit)))
      }
      const input = Buffer.concat(parts)
      try {
        for (let at = 0; at < input.length; ) {
          const n = 1 + Math.floor(Math.random() * 700)
          frames += decoder.push(input.subarray(at, at + n)).length
          at += n
          expect(decoder.pending).toBeLessThanOrEqual(limit + HEADER_BYTES + 700)
        }
      } catch (err) {
        expect(err).toBeInstanceOf(WireError)
        errors++
      }
    }
    expect(errors).toBeGreaterThan(100)
    expect(frames).toBeGreaterThan(100)
  })
})

/** Two connected in-memory duplexes (the socket is not what is under test here). */
function pair() {
  const [sockA, sockB] = duplexPair()
  return { sockA, sockB }
}

describe('hello', () => {
  test('the right token is accepted and the agent info comes back', async () => {
    const { sockA, sockB } = pair()
    const [host] = await Promise.all([helloAsHost(sockA, 'secret', 2000), helloAsGuest(sockB, 'secret', info, 2000)])
    expect(host.info).toEqual(info)
  })

  test('a wrong token is refused with AGENT_AUTH on the host, and the guest says why', async () => {
    const { sockA, sockB } = pair()
    const guest = helloAsGuest(sockB, 'secret', info, 2000)
    await expect(helloAsHost(sockA, 'guess', 2000)).rejects.toMatchObject({
      code: 'AGENT_AUTH',
      message: expect.stringMatching(/refused this host: wrong token/),
    })
    await expect(guest).rejects.toMatchObject({ code: 'AGENT_AUTH' })
  })

  test('an agent with no token yet (started in a template) refuses every hello, naming why', async () => {
    const { sockA, sockB } = pair()
    const guest = helloAsGuest(sockB, undefined, info, 2000)
    await expect(helloAsHost(sockA, 'any', 2000)).rejects.toMatchObject({ code: 'AGENT_AUTH', message: expect.stringMatching(/no token yet/) })
    await expect(guest).rejects.toMatchObject({ code: 'AGENT_AUTH' })
  })

  test('before hello only 4 KiB is accepted: a huge first frame is an error, not an allocation', async () => {
    const { sockA, sockB } = pair()
    const guest = helloAsGuest(sockB, 'secret', info, 2000)
    sockA.write(encodeFrame(0, FrameType.HELLO, Buffer.alloc(64 * 1024)))
    await expect(guest).rejects.toThrow(/exceeds the 4096-byte limit/)
  })

  test('a request before hello is refused', async () => {
    const { sockA, sockB } = pair()
    const guest = helloAsGuest(sockB, 'secret', info, 2000)
    sockA.write(encodeMessage({ kind: 'request', id: 1, op: 'spawn', body: {} }))
    await expect(guest).rejects.toThrow(/expected HELLO on channel 0/)
  })
})

describe('WirePeer', () => {
  async function connected(onRequest?: ConstructorParameters<typeof WirePeer>[1]['onRequest']) {
    const { sockA, sockB } = pair()
    const [h, g] = await Promise.all([helloAsHost(sockA, 't', 2000), helloAsGuest(sockB, 't', info, 2000)])
    const host = new WirePeer(sockA, {}, h.leftover, h.decoder)
    const guest = new WirePeer(sockB, { ...(onRequest ? { onRequest } : {}) }, g.leftover, g.decoder)
    sockA.resume()
    sockB.resume()
    return { host, guest }
  }

  test('requests are checked on both ends: bad arguments come back as an error, not a crash', async () => {
    const { host } = await connected(async () => ({ pid: 5 }))
    await expect(host.request('spawn', { ref: 1, cmd: 'x', args: [] })).resolves.toEqual({ pid: 5 })
    await expect(host.request('spawn', { ref: -1, cmd: 'x', args: [] } as never)).rejects.toThrow(/spawn arguments.ref: expected a non-negative integer/)
  })

  test('a malformed result from the guest fails the request and closes the connection', async () => {
    const { host } = await connected(async () => ({ pid: 'nope' }))
    await expect(host.request('spawn', { ref: 1, cmd: 'x', args: [] })).rejects.toThrow(/spawn result.pid: expected a non-negative integer, got string/)
    expect(await host.closed).toBeInstanceOf(WireError)
  })

  test('a channel carries 8 MiB in order through a 1 MiB window while the reader is slow', async () => {
    const { host, guest } = await connected()
    const out = host.openChannel()
    const inbound = guest.channel(out.id)
    const data = randomBytes(8 * 1024 * 1024)
    out.end(data)
    const got: Buffer[] = []
    let maxBuffered = 0
    for await (const chunk of inbound) {
      got.push(chunk as Buffer)
      maxBuffered = Math.max(maxBuffered, inbound.readableLength)
      if (got.length % 8 === 0) await new Promise((r) => setTimeout(r, 1))
    }
    expect(Buffer.concat(got).equals(data)).toBe(true)
    expect(maxBuffered).toBeLessThanOrEqual(1024 * 1024)
  })

  test('a peer that writes past its credit is a protocol error', async () => {
    const { sockA, sockB } = pair()
    const [h, g] = await Promise.all([helloAsHost(sockA, 't', 2000), helloAsGuest(sockB, 't', info, 2000)])
    void h
    const guest = new WirePeer(sockB, {}, g.leftover, g.decoder)
    guest.channel(2).on('error', () => undefined)
    sockB.resume()
    for (let i = 0; i < 5; i++) sockA.write(encodeFrame(2, FrameType.DATA, Buffer.alloc(256 * 1024)))
    const err = await guest.closed
    expect(err?.message).toMatch(/over its 1048576-byte window/)
  })

  test('garbage v8 in a control message closes the connection with a WireError', async () => {
    const { sockA, sockB } = pair()
    const [, g] = await Promise.all([helloAsHost(sockA, 't', 2000), helloAsGuest(sockB, 't', info, 2000)])
    const guest = new WirePeer(sockB, {}, g.leftover, g.decoder)
    sockB.resume()
    sockA.write(encodeFrame(0, FrameType.MESSAGE, Buffer.from([0xff, 0x0f, 0x99, 0x99])))
    expect(await guest.closed).toBeInstanceOf(WireError)
  })
})
