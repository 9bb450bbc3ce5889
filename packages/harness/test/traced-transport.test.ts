import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { AgentClient } from '../src/agent-client/client.js'
import { encodeLine } from '../src/control/line-codec.js'
import { FrameHeaderScanner, LineScanner, traced } from '../src/control/traced-transport.js'
import { TcpTransport } from '../src/control/transport.js'
import { debug } from '../src/log.js'
import { encodeFrame, FrameType } from '../src/wire/frame.js'
import { startLocalAgent, type LocalAgent } from './support/local-agent.js'

/** Feed `bytes` to `push` in pieces of `size` bytes and collect everything it returns. */
function inPieces<T>(bytes: Buffer, size: number, push: (chunk: Buffer) => T[]): T[] {
  const out: T[] = []
  for (let i = 0; i < bytes.length; i += size) out.push(...push(bytes.subarray(i, i + size)))
  return out
}

describe('header scanners', () => {
  test('frames: type, channel and size in any chunking; the payload is skipped', () => {
    const stream = Buffer.concat([
      encodeFrame(0, FrameType.HELLO, Buffer.from('token-0123456789abcdef')),
      encodeFrame(4, FrameType.DATA, Buffer.alloc(70_000, 7)),
      encodeFrame(4, FrameType.END),
      encodeFrame(0, FrameType.CREDIT, Buffer.from([0, 1, 0, 0])),
    ])
    const expected = [
      { type: 'HELLO', channel: 0, length: 22 },
      { type: 'DATA', channel: 4, length: 70_000 },
      { type: 'END', channel: 4, length: 0 },
      { type: 'CREDIT', channel: 0, length: 4 },
    ]
    for (const size of [1, 5, 9, 4096, stream.length]) {
      const scanner = new FrameHeaderScanner()
      expect(inPieces(stream, size, (c) => scanner.push(c))).toEqual(expected)
    }
  })

  test('NDJSON lines: the type field and the size, nothing of the payload', () => {
    const secret = 'inject_secret_value_do_not_print'
    const stream = Buffer.concat([
      encodeLine({ type: 'inject_secret', payload: { name: 'API_TOKEN', value: secret, mode: 384 } }),
      encodeLine({ type: 'ack', payload: { reply_to: 'inject_secret', ok: true } }),
      Buffer.from('{"payload":{"x":1},"type":"late"}\n'),
      Buffer.from('not json\n'),
    ])
    for (const size of [1, 7, stream.length]) {
      const scanner = new LineScanner()
      const lines = inPieces(stream, size, (c) => scanner.push(c))
      expect(lines.map((l) => l.type)).toEqual(['inject_secret', 'ack', 'late', '?'])
      expect(lines.reduce((sum, l) => sum + l.bytes, 0)).toBe(stream.length)
      expect(JSON.stringify(lines)).not.toContain(secret)
    }
  })
})

describe('traced transport (real agent on this host)', () => {
  let agent: LocalAgent
  const saved = process.env.DEBUG
  beforeAll(async () => {
    agent = await startLocalAgent()
  })
  afterAll(async () => {
    await agent?.stop()
  })
  afterEach(() => {
    if (saved === undefined) delete process.env.DEBUG
    else process.env.DEBUG = saved
  })

  async function run(): Promise<string[]> {
    const lines: string[] = []
    const transport = traced(
      new TcpTransport('127.0.0.1', agent.port),
      'wire',
      debug('stereos:wire', (text) => lines.push(text)),
    )
    const client = await AgentClient.connect(transport, agent.token, 5000)
    try {
      expect(await client.exec('sh', ['-c', 'echo hi; echo err >&2'])).toEqual({ exitCode: 0, signal: null, stdout: 'hi\n', stderr: 'err\n' })
    } finally {
      client.close()
    }
    return lines
  }

  test('DEBUG=stereos:wire lists frames both ways, never the token; the protocol is unchanged', async () => {
    process.env.DEBUG = 'stereos:*'
    const lines = await run()
    const text = lines.join('')
    expect(text).toMatch(/tcp 127\.0\.0\.1:\d+ → HELLO ch0 \d+ B/)
    expect(text).toMatch(/← HELLO ch0 \d+ B/)
    expect(text).toMatch(/→ MESSAGE ch0 \d+ B/)
    expect(text).toMatch(/← DATA ch\d+ 3 B/)
    expect(text).not.toContain(agent.token)
  })

  test('without DEBUG nothing is traced', async () => {
    delete process.env.DEBUG
    expect(await run()).toEqual([])
  })
})
