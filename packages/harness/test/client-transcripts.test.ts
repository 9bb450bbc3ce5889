import { readFileSync } from 'node:fs'
import { afterEach, describe, expect, test } from 'vitest'
import { StereosdClient } from '../src/control/client.js'
import type { HostRequests, HostRequestType } from '../src/control/messages.js'
import { TcpTransport } from '../src/control/transport.js'
import { scriptedPeer, type ScriptedPeer } from './support/scripted-peer.js'

interface Step {
  request: string
  raw?: boolean
  reply: string | null
  client?: { ok: true } | { error: 'REQUEST_REJECTED' } | { error: 'PROTOCOL'; message: string }
}
interface Transcript {
  name: string
  client?: boolean
  steps: Step[]
}

const transcripts = JSON.parse(readFileSync(new URL('../../../test/transcripts/stereosd.json', import.meta.url), 'utf8')) as Transcript[]

let peer: ScriptedPeer | undefined
afterEach(async () => {
  await peer?.close()
  peer = undefined
})

describe('host client against the golden stereosd transcripts', () => {
  const usable = transcripts.filter((t) => t.client !== false)
  test('covers every request type the host sends', () => {
    const types = new Set(usable.flatMap((t) => t.steps.map((s) => (JSON.parse(s.request) as { type: string }).type)))
    expect([...types].sort()).toEqual(['get_health', 'inject_secret', 'inject_ssh_key', 'mount', 'ping', 'set_config', 'shutdown'])
  })

  for (const transcript of usable) {
    test(transcript.name, async () => {
      peer = await scriptedPeer(transcript.steps.map((s) => s.reply))
      const client = new StereosdClient(await new TcpTransport('127.0.0.1', peer.port).connect(2_000), 'scripted peer')
      for (const [i, step] of transcript.steps.entries()) {
        const request = JSON.parse(step.request) as { type: HostRequestType; payload?: unknown }
        const reply = client.request(request.type, request.payload as HostRequests[HostRequestType], { timeoutMs: 2_000 })
        const expected = step.client!
        // What stereosd answered: the reply's last line (a lifecycle push before it is skipped).
        const answer = () => JSON.parse(step.reply!.split('\n').at(-1)!) as { payload?: { error?: string } }
        if ('ok' in expected) {
          await expect(reply).resolves.toEqual(answer())
        } else if (expected.error === 'REQUEST_REJECTED') {
          const guestError = answer().payload!.error!
          await expect(reply).rejects.toMatchObject({
            code: 'REQUEST_REJECTED',
            request: request.type,
            guestError,
            message: `stereosd rejected ${request.type}: ${guestError}`,
          })
        } else {
          await expect(reply).rejects.toMatchObject({ code: expected.error, message: expect.stringMatching(new RegExp(expected.message)) })
        }
        // The client put exactly the transcript's request on the wire, one line per request.
        expect(peer.received).toHaveLength(i + 1)
        expect(JSON.parse(peer.received[i]!)).toEqual(request)
      }
      client.close()
    })
  }
})
