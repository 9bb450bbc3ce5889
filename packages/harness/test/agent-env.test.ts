import { afterAll, beforeAll, describe, expect, test, vi } from 'vitest'
import type { AgentClient } from '../src/agent-client/client.js'
import { startLocalAgent, type LocalAgent } from './support/local-agent.js'

/** What the SSH bootstrap's `sudo /bin/sh -c …` leaves in the agent's environment (seen in a pool VM). */
const LAUNCH = {
  SUDO_USER: 'admin',
  SUDO_UID: '1000',
  SUDO_GID: '1000',
  SUDO_COMMAND: '/bin/sh -c setsid /bin/sh /opt/stereos-harness/bin/agent stereos-harness-agent',
  MAIL: '/var/mail/root',
  PWD: '/home/admin',
  SHLVL: '2',
  TERM: 'xterm',
}

describe('the environment a process the agent starts begins with (#20)', () => {
  let agent: LocalAgent
  let client: AgentClient
  beforeAll(async () => {
    // The local agent inherits this process's environment, as the guest's inherits sudo's.
    for (const [key, value] of Object.entries(LAUNCH)) vi.stubEnv(key, value)
    vi.stubEnv('STEREOS_AGENT_ENV_PROBE', 'kept')
    try {
      agent = await startLocalAgent()
    } finally {
      vi.unstubAllEnvs()
    }
    client = await agent.connect()
  })
  afterAll(async () => {
    client?.close()
    await agent?.stop()
  })

  const envOf = async (env?: Record<string, string>) => {
    const result = await client.exec(process.execPath, ['-e', 'process.stdout.write(JSON.stringify(process.env))'], env ? { env } : {})
    return JSON.parse(result.stdout) as Record<string, string>
  }

  test("not the agent's launch (sudo, its shell, its terminal) nor its token; the rest of its environment and PATH", async () => {
    const env = await envOf()
    for (const key of Object.keys(LAUNCH)) expect(env).not.toHaveProperty(key)
    expect(env).not.toHaveProperty('STEREOS_HARNESS_TOKEN')
    expect(env.STEREOS_AGENT_ENV_PROBE).toBe('kept')
    expect(env.PATH).toBeTruthy()
  })

  test('what the caller names it gets, TERM included', async () => {
    const env = await envOf({ TERM: 'dumb', PWD: '/x' })
    expect(env).toMatchObject({ TERM: 'dumb', PWD: '/x' })
  })
})
