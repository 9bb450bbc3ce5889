import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { limitedLog } from '../src/guest-agent/log-limit.js'
import { startLocalAgent, type LocalAgent } from './support/local-agent.js'

describe('refused hellos are logged at a bounded rate (#19 bounds: the agent log is the guest console, i.e. serial.log)', () => {
  test('the first of each period are logged, then one line saying the rest are not, then their count', () => {
    const lines: string[] = []
    let now = 0
    const log = limitedLog((l) => lines.push(l), { burst: 3, periodMs: 1000, now: () => now })
    for (let i = 0; i < 1000; i++) log(`refused ${i}`)
    expect(lines).toEqual(['refused 0', 'refused 1', 'refused 2', 'further refusals not logged for up to 1 s'])
    now = 1000
    log('refused late')
    expect(lines.slice(4)).toEqual(['997 further refusals were not logged in the last 1 s', 'refused late'])
  })

  test('a long line (its text may come from the peer) is cut', () => {
    const lines: string[] = []
    limitedLog((l) => lines.push(l), { maxLineChars: 10 })(`refused ${'x'.repeat(10_000)}`)
    expect(lines).toEqual(['refused xx…'])
  })

  describe('the real agent', () => {
    let agent: LocalAgent
    beforeAll(async () => {
      agent = await startLocalAgent()
    })
    afterAll(async () => {
      await agent?.stop()
    })

    test('40 wrong tokens write a handful of lines, not 40', async () => {
      for (let i = 0; i < 40; i++) await expect(agent.connect('b'.repeat(64))).rejects.toMatchObject({ code: 'AGENT_AUTH' })
      const client = await agent.connect()
      expect((await client.exec('true')).exitCode).toBe(0)
      client.close()
      const refusals = agent
        .stderr()
        .split('\n')
        .filter((l) => l.includes('refused a connection'))
      expect(refusals).toHaveLength(5)
      expect(agent.stderr()).toContain('further refusals not logged')
    })
  })
})
