import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Sandbox } from '@stereos/harness'
import { describe, expect, test } from 'vitest'
import { runtimeDir, vmDirs, waitForFile } from './support.js'

describe('aarch64 fixture (cross-arch under TCG on x86_64 hosts)', () => {
  test('boots to ready, a set_config agent writes into a 9p share, the guest agent runs commands, shutdown is clean', async () => {
    const runtime = runtimeDir()
    const out = mkdtempSync(join(tmpdir(), 'sh-out-arm-'))
    const jcard = `[[agents]]\nname = "probe"\nharness = "custom"\ntype = "native"\nprompt = '''uname -m > /mnt/out/arch; id -un > /mnt/out/user'''\n`
    await using sandbox = await Sandbox.boot({
      arch: 'aarch64',
      runtimeDir: runtime,
      shared: [{ host: out, guest: '/mnt/out' }],
      jcard,
      bootTimeoutMs: 240_000,
      agentTimeoutMs: 240_000,
    })
    expect(sandbox.info.arch).toBe('aarch64')
    expect(sandbox.info.accel).toBe(process.arch === 'arm64' ? sandbox.info.accel : 'tcg')
    // Restored from the aarch64 template (saved and restored by this boot if it was the first of its kind);
    // the guest's clock is the host's, not the template's.
    expect(sandbox.info.template?.id).toMatch(/^[0-9a-f]{24}$/)
    expect(Math.abs(Number((await sandbox.exec('date', ['-u', '+%s'])).stdout) - Date.now() / 1000)).toBeLessThan(5)
    expect((await waitForFile(join(out, 'user'), 90_000)).trim()).toBe('agent')
    expect((await waitForFile(join(out, 'arch'), 5_000)).trim()).toBe('aarch64')
    // The guest agent (arm64 Node and addon from the harness share) runs beside the jcard's own agent.
    expect((await sandbox.agent()).info.arch).toBe('arm64')
    const data = Buffer.from([0, 1, 2, 255, 254, 10, 13])
    await sandbox.writeFile('/home/agent/bytes', data)
    expect((await sandbox.execBuffer('cat', ['/home/agent/bytes'])).stdout.equals(data)).toBe(true)
    expect((await sandbox.exec('uname', ['-m'])).stdout).toBe('aarch64\n')
    const report = await sandbox.shutdown({ timeoutMs: 20_000 })
    expect(report.stoppedBy).toBe('control-plane')
    expect(vmDirs(runtime)).toEqual([])
  }, 600_000)

  test('started over SSH (as the pool starts it), the agent runs in the aarch64 template: from the share image on its own virtio-blk disk', async () => {
    const runtime = runtimeDir()
    await using sandbox = await Sandbox.boot({ arch: 'aarch64', runtimeDir: runtime, bootstrap: 'ssh', bootTimeoutMs: 240_000, agentTimeoutMs: 240_000 })
    expect(sandbox.info.template).toMatchObject({ agent: true })
    expect((await sandbox.agent()).info).toMatchObject({ arch: 'arm64', root: true })
    expect((await sandbox.exec('sh', ['-c', 'grep " /opt/stereos-harness " /proc/mounts | cut -d" " -f3,4'])).stdout).toMatch(/^ext4 ro/)
    expect(Math.abs(Number((await sandbox.exec('date', ['-u', '+%s'])).stdout) - Date.now() / 1000)).toBeLessThan(5)
  }, 600_000)
})
