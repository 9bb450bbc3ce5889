import { join } from 'node:path'
import { execa } from 'execa'
import { describe, expect, test } from 'vitest'
import { repoRoot, runtimeDir, vmDirs } from './support.js'

/**
 * `stereos-harness doctor --mixtape REF --json` on the fixture guests: one boot each (bootstrap
 * ssh with a VM template), every check in that VM, and the lines that tell the three apart.
 */
const cli = join(repoRoot, 'packages', 'harness', 'dist', 'cli', 'main.js')

interface Check {
  name: string
  status: 'ok' | 'warn' | 'fail'
  detail: string
  fix?: string
}
interface Report {
  checks: Check[]
  canBoot: boolean
  mixtape: { ref: string; checks: Check[]; ok: boolean }
}

async function doctor(ref: string): Promise<{ exitCode: number | undefined; report: Report; byName: (name: string) => Check; stderr: string }> {
  const runtime = runtimeDir()
  const result = await execa(process.execPath, [cli, 'doctor', '--mixtape', ref, '--arch', 'x86_64', '--json'], {
    reject: false,
    env: { STEREOS_RUNTIME_DIR: runtime },
  })
  expect(vmDirs(runtime)).toEqual([])
  const report = JSON.parse(result.stdout) as Report
  const byName = (name: string) => {
    const check = report.mixtape.checks.find((c) => c.name === name)
    if (!check) throw new Error(`no ${name} line in ${result.stdout}`)
    return check
  }
  return { exitCode: result.exitCode, report, byName, stderr: result.stderr }
}

/** What every fixture variant has: 9p, overlay, the share image and templates, sudo for admin. */
function expectHarnessBasics(byName: (name: string) => Check, report: Report): void {
  for (const name of ['boot', 'agent: ssh', 'sudo', '9p', 'overlay', 'share image', 'template save']) expect(byName(name).status, name).toBe('ok')
  expect(byName('agent: ssh').detail).toContain('as root through sudo')
  // vsock is tried only where the host has vhost-vsock, and says so otherwise.
  const hostVsock = report.checks.find((c) => c.name === 'vhost-vsock')!
  if (hostVsock.status === 'ok') expect(byName('vsock').status).toBe('ok')
  else expect(byName('vsock')).toMatchObject({ status: 'warn', detail: expect.stringMatching(/^not tried: /) })
}

describe('doctor --mixtape', () => {
  test('fixture: harness-ready, sudo at /usr/bin/sudo, agentd runs /usr/bin/agent; exit 0', async () => {
    const { exitCode, report, byName, stderr } = await doctor('fixture')
    expect(exitCode, stderr).toBe(0)
    expect(report.mixtape.ok).toBe(true)
    expectHarnessBasics(byName, report)
    expect(byName('sudo').detail).toContain('sudo is /usr/bin/sudo; /usr/bin/sudo exists')
    expect(byName('agent: agentd')).toMatchObject({ status: 'ok', detail: expect.stringContaining("the harness's launcher /usr/bin/agent") })
  })

  test('fixture-nixos: no /usr/bin/sudo, sudo through /run/wrappers/bin works; agentd finds the launcher; exit 0', async () => {
    const { exitCode, report, byName, stderr } = await doctor('fixture-nixos')
    expect(exitCode, stderr).toBe(0)
    expect(report.mixtape.ok).toBe(true)
    expectHarnessBasics(byName, report)
    expect(byName('sudo').detail).toContain('sudo is /run/wrappers/bin/sudo; /usr/bin/sudo does not exist, /run/wrappers/bin/sudo exists')
    expect(byName('agent: agentd')).toMatchObject({ status: 'ok', detail: expect.stringMatching(/the harness's launcher \/\S+\/agent /) })
    expect(byName('agent: agentd').detail).not.toContain('/usr/bin/agent')
  })

  test("fixture-stock: no launcher, so agentd's path is a warn naming agentd's error; the ssh path works, exit 0", async () => {
    const { exitCode, report, byName, stderr } = await doctor('fixture-stock')
    expect(exitCode, stderr).toBe(0)
    expectHarnessBasics(byName, report)
    expect(byName('agent: agentd')).toMatchObject({
      status: 'warn',
      detail: expect.stringContaining('not found in PATH'),
      fix: expect.stringContaining('harness-ready'),
    })
  })

  test('a mixtape that cannot boot at all: a FAIL line and exit 1', async () => {
    const { exitCode, report, byName } = await doctor('/nonexistent/stereos-mixtape')
    expect(exitCode).toBe(1)
    expect(report.mixtape.ok).toBe(false)
    expect(byName('boot (bootstrap ssh)')).toMatchObject({ status: 'fail', fix: expect.any(String) })
  })
})
