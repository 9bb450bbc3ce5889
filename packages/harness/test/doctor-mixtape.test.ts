import { describe, expect, test } from 'vitest'
import type { HealthPayload } from '../src/control/messages.js'
import { agentdCheck, type GuestProbe, ninePCheck, type ShellResult, sudoCheck, templateCheck } from '../src/doctor/guest-checks.js'

/** A guest that answers each probe from the test's functions; unset ones fail loudly. */
function fakeGuest(parts: Partial<GuestProbe>): GuestProbe & { configs: string[] } {
  const configs: string[] = []
  const unset = (what: string) => () => Promise.reject(new Error(`unexpected ${what}`))
  return {
    asRoot: unset('asRoot'),
    asAdmin: unset('asAdmin'),
    readFile: unset('readFile'),
    health: unset('health'),
    setConfig: async (content) => {
      configs.push(content)
    },
    sleep: async () => undefined,
    ...parts,
    configs,
  }
}

const shell = (stdout: string, code = 0, stderr = ''): ShellResult => ({ code, stdout, stderr })

describe('sudo', () => {
  test('a NixOS-like guest: sudo only through /run/wrappers/bin, and it says what it found', async () => {
    const check = await sudoCheck(fakeGuest({ asAdmin: async () => shell('found=/run/wrappers/bin/sudo\nhas=/run/wrappers/bin/sudo\nsudo-ok\n') }))
    expect(check.status).toBe('ok')
    expect(check.detail).toContain('sudo is /run/wrappers/bin/sudo; /usr/bin/sudo does not exist, /run/wrappers/bin/sudo exists')
  })

  test('no passwordless sudo is a fail with the fix', async () => {
    const check = await sudoCheck(fakeGuest({ asAdmin: async () => shell('found=/usr/bin/sudo\nhas=/usr/bin/sudo\n') }))
    expect(check).toMatchObject({ status: 'fail', fix: expect.stringContaining('NOPASSWD') })
    expect(check.detail).toContain('/usr/bin/sudo exists')
  })

  test('the probe runs with the ssh bootstrap PATH (wrappers first)', async () => {
    let script = ''
    await sudoCheck(
      fakeGuest({
        asAdmin: async (s) => {
          script = s
          return shell('')
        },
      }),
    )
    expect(script.split('\n')[0]).toBe('export PATH="/run/wrappers/bin:$PATH:/run/current-system/sw/bin"')
  })
})

describe('agentd', () => {
  const launcher = Buffer.from('#!/bin/sh\n# the launcher\n')
  const files = (agent: Buffer) => async (path: string) => {
    if (path === '/etc/stereos/jcard.toml') return Buffer.from('[defaults]\n')
    if (path === '/usr/bin/agent') return agent
    if (path === '/opt/stereos-harness/bin/agent') return launcher
    throw new Error(`no ${path}`)
  }

  test("agentd ran the harness's launcher: ok, after the jcard got a probe agent appended", async () => {
    let polls = 0
    const guest = fakeGuest({
      readFile: files(launcher),
      asRoot: async () => (++polls < 3 ? shell('', 1) : shell('/usr/bin/agent\n')),
      health: async (): Promise<HealthPayload> => ({ state: 'ready', uptime_seconds: 3 }),
    })
    const check = await agentdCheck(guest, 'abc')
    expect(check).toMatchObject({ status: 'ok', detail: expect.stringContaining('/usr/bin/agent') })
    expect(guest.configs).toHaveLength(1)
    expect(guest.configs[0]).toMatch(/^\[defaults\]\n\n\[\[agents\]\]\nname = "stereos-harness-doctor-abc"\nharness = "custom"\ntype = "native"\n/)
    expect(guest.configs[0]).toContain('prompt = "command -v agent > /tmp/stereos-harness-doctor-abc"')
  })

  test('another `agent` on the PATH is a warn', async () => {
    const guest = fakeGuest({ readFile: files(Buffer.from('other')), asRoot: async () => shell('/usr/bin/agent\n') })
    expect(await agentdCheck(guest, 'abc')).toMatchObject({ status: 'warn', detail: expect.stringContaining('not the harness') })
  })

  test("no launcher: a warn naming agentd's error, not a fail (the ssh path remains)", async () => {
    const error = 'harness binary "agent" not found in PATH (/run/current-system/sw/bin)'
    const guest = fakeGuest({
      readFile: files(launcher),
      asRoot: async () => shell('', 1),
      health: async () => ({ state: 'ready', uptime_seconds: 3, agents: [{ name: 'stereos-harness-doctor-abc', running: false, restarts: 0, error }] }),
    })
    const check = await agentdCheck(guest, 'abc')
    expect(check.status).toBe('warn')
    expect(check.detail).toContain(error)
    expect(check.fix).toContain("bootstrap: 'ssh'")
  })
})

test("9p: a failed cache=loose remount is named as the pool's", async () => {
  const check = await ninePCheck(fakeGuest({ asRoot: async () => shell('x\n', 5, 'mount: bad option') }), 'share0', 'x\n')
  expect(check).toMatchObject({ status: 'fail', detail: "the pool's remount with cache=loose failed: mount: bad option" })
})

test('no template without zstd: a warn whose fix installs it', () => {
  const check = templateCheck(undefined, ['zstd is not installed: VMs boot cold, without templates (apt-get install zstd)'])
  expect(check).toMatchObject({ status: 'warn', fix: 'apt-get install zstd' })
})
