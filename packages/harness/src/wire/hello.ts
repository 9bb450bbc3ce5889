import { timingSafeEqual } from 'node:crypto'
import type { Duplex } from 'node:stream'
import { serialize } from 'node:v8'
import { HarnessError } from '../errors.js'
import { encodeFrame, FrameDecoder, FrameType, type Frame } from './frame.js'
import { GuestHello, HELLO_MAGIC, HostHello, PROTOCOL_VERSION, type AgentInfo } from './messages.js'
import { decodeV8, HELLO_MAX_PAYLOAD } from './peer.js'
import { WireError } from './wire-error.js'

/** What a finished handshake hands to WirePeer: the decoder and any frames that came with hello. */
export interface Handshake {
  decoder: FrameDecoder
  leftover: Frame[]
}

/**
 * Reads frames until the first one arrives; everything after it is kept for the peer. Limits
 * the payload to HELLO_MAX_PAYLOAD so an unauthenticated peer cannot make us buffer more.
 */
function firstFrame(socket: Duplex, timeoutMs: number, what: string): Promise<{ frame: Frame } & Handshake> {
  return new Promise((resolve, reject) => {
    const decoder = new FrameDecoder({ maxPayload: HELLO_MAX_PAYLOAD })
    const done = (err: Error | undefined, result?: { frame: Frame } & Handshake) => {
      clearTimeout(timer)
      socket.off('data', onData)
      socket.off('error', onError)
      socket.off('close', onClose)
      if (err) reject(err)
      else resolve(result as { frame: Frame } & Handshake)
    }
    const onData = (chunk: Buffer) => {
      let frames: Frame[]
      try {
        frames = decoder.push(chunk)
      } catch (err) {
        return done(err as Error)
      }
      const [frame, ...leftover] = frames
      if (frame) {
        socket.pause()
        done(undefined, { frame, decoder, leftover })
      }
    }
    const onError = (err: Error) => done(new HarnessError('AGENT_UNREACHABLE', `agent connection failed during hello: ${err.message}`, { cause: err }))
    const onClose = () => done(new HarnessError('AGENT_UNREACHABLE', `the connection closed before ${what}`))
    const timer = setTimeout(() => done(new HarnessError('AGENT_UNREACHABLE', `no ${what} within ${timeoutMs} ms`)), timeoutMs)
    socket.on('data', onData)
    socket.once('error', onError)
    socket.once('close', onClose)
    socket.resume()
  })
}

function checkHelloFrame(frame: Frame): unknown {
  if (frame.channel !== 0 || frame.type !== FrameType.HELLO)
    throw new WireError(`expected HELLO on channel 0, got frame type ${frame.type} on channel ${frame.channel}`)
  return decodeV8(frame.payload, 'hello')
}

/** Host side: send the token, wait for the agent's verdict. */
export async function helloAsHost(socket: Duplex, token: string, timeoutMs: number): Promise<Handshake & { info: AgentInfo }> {
  socket.write(encodeFrame(0, FrameType.HELLO, serialize({ magic: HELLO_MAGIC, version: PROTOCOL_VERSION, token })))
  const { frame, ...rest } = await firstFrame(socket, timeoutMs, "the agent's hello")
  const hello = GuestHello(checkHelloFrame(frame), 'agent hello')
  if (!hello.accepted) {
    throw new HarnessError('AGENT_AUTH', `the guest agent refused this host: ${hello.reason ?? 'no reason given'}`, {
      fix: 'only the host that booted a VM holds its agent token; connect through that Sandbox',
    })
  }
  if (hello.version !== PROTOCOL_VERSION || !hello.info) {
    throw new WireError(`the agent speaks protocol ${hello.version}, this host ${PROTOCOL_VERSION}`)
  }
  return { ...rest, info: hello.info }
}

/** Constant-time token comparison (lengths are not secret: tokens are fixed-size). */
export function tokenMatches(expected: string, given: string): boolean {
  const a = Buffer.from(expected)
  const b = Buffer.from(given)
  return a.length === b.length && timingSafeEqual(a, b)
}

/**
 * Guest side: accept the connection only with the right token and protocol version. No token
 * yet (an agent started in a template, before any lease injected one) refuses every hello.
 */
export async function helloAsGuest(socket: Duplex, token: string | undefined, info: AgentInfo, timeoutMs: number): Promise<Handshake> {
  const { frame, ...rest } = await firstFrame(socket, timeoutMs, "the host's hello")
  const reply = (body: Record<string, unknown>) =>
    socket.write(encodeFrame(0, FrameType.HELLO, serialize({ magic: HELLO_MAGIC, version: PROTOCOL_VERSION, ...body })))
  let hello: HostHello
  try {
    hello = HostHello(checkHelloFrame(frame), 'host hello')
  } catch (err) {
    reply({ accepted: false, reason: (err as Error).message.split('\n')[0] })
    throw err
  }
  if (hello.version !== PROTOCOL_VERSION) {
    reply({ accepted: false, reason: `protocol ${hello.version} is not ${PROTOCOL_VERSION}` })
    throw new WireError(`host speaks protocol ${hello.version}`)
  }
  if (token === undefined) {
    reply({ accepted: false, reason: 'no token yet: the host injects it with inject_secret before it connects' })
    throw new HarnessError('AGENT_AUTH', 'a peer connected before the token was injected')
  }
  if (!tokenMatches(token, hello.token)) {
    reply({ accepted: false, reason: 'wrong token' })
    throw new HarnessError('AGENT_AUTH', 'a peer sent a wrong token')
  }
  reply({ accepted: true, info })
  return rest
}
