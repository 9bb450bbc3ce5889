import { existsSync } from 'node:fs'
import { type Arch, Sandbox, probeKvm } from '@stereos/harness'
import { describe, expect, test } from 'vitest'
import { processExists, runtimeDir, vmDirs } from './support.js'

/**
 * The paths that need what these development machines lack (their /dev/kvm is PVM-backed and
 * cannot boot normal kernels; there is no /dev/vhost-vsock). Selected by capability: they run
 * where the host has it, as on the CI runners (.github/workflows/ci.yml), and are skipped
 * elsewhere with the missing capability in the title.
 */
const arch: Arch | undefined = process.arch === 'x64' ? 'x86_64' : process.arch === 'arm64' ? 'aarch64' : undefined
const kvm = arch ? await probeKvm(arch) : { usable: false, reason: `no stereOS guests for ${process.arch} hosts` }
// The workflow sets EXPECT_KVM=true where KVM must work: there a missing KVM fails the boot instead of skipping it.
const withKvm = kvm.usable || process.env.EXPECT_KVM === 'true'
const vsock = existsSync('/dev/vhost-vsock')

describe.skipIf(!withKvm)(`boot with KVM${withKvm ? '' : ` (skipped, KVM unusable: ${kvm.reason})`}`, () => {
  test('the fixture boots with accel kvm, is ready, and stops through the control plane', async () => {
    const runtime = runtimeDir()
    const sandbox = await Sandbox.boot({ accel: 'kvm', runtimeDir: runtime })
    let report
    try {
      expect(sandbox.info.accel).toBe('kvm')
      expect(sandbox.info.accelNote).toBeUndefined()
      // The guest agent runs (agentd started it), so stereosd reports healthy, not just ready.
      expect((await sandbox.control.health()).state).toBe('healthy')
      expect((await sandbox.exec('uname', ['-m'])).stdout.trim()).toBe(arch)
    } finally {
      report = await sandbox.shutdown({ timeoutMs: 20_000 })
    }
    expect(report.stoppedBy).toBe('control-plane')
    expect(processExists(sandbox.info.pid)).toBe(false)
    expect(vmDirs(runtime)).toEqual([])
  })
})

describe.skipIf(!vsock)(`vhost-vsock${vsock ? '' : ' (skipped, /dev/vhost-vsock does not exist)'}`, () => {
  test('the control plane and the guest agent run over vsock, with no TCP forward for either', async () => {
    await using sandbox = await Sandbox.boot({ controlPlane: 'vsock', runtimeDir: runtimeDir() })
    expect(sandbox.info.transport).toMatchObject({ kind: 'vsock', port: 1024 })
    expect(sandbox.info.ports.control).toBeUndefined()
    expect(sandbox.info.ports.agent).toBeUndefined()
    expect((await sandbox.agent()).info.listen).toBe('vsock')
    expect((await sandbox.exec('echo', ['over vsock'])).stdout).toBe('over vsock\n')
  }, 300_000)

  test('8 VMs boot in parallel, each with a kernel-reserved CID: all distinct, all ready, all stopped cleanly', async () => {
    const runtime = runtimeDir()
    const boots = await Promise.allSettled(
      Array.from({ length: 8 }, () =>
        Sandbox.boot({ controlPlane: 'vsock', bootstrap: 'none', runtimeDir: runtime, resources: { memory: '256MiB' }, bootTimeoutMs: 300_000 }),
      ),
    )
    const sandboxes = boots.flatMap((b) => (b.status === 'fulfilled' ? [b.value] : []))
    try {
      expect(boots.filter((b) => b.status === 'rejected')).toEqual([])
      const cids = sandboxes.map((s) => (s.info.transport.kind === 'vsock' ? s.info.transport.cid : -1))
      expect(new Set(cids).size).toBe(8)
      expect(cids.every((cid) => cid >= 3)).toBe(true)
      for (const s of sandboxes) expect(['ready', 'healthy']).toContain((await s.control.health()).state)
    } finally {
      const reports = await Promise.all(sandboxes.map((s) => s.shutdown({ timeoutMs: 30_000 })))
      expect(reports.map((r) => r.stoppedBy)).toEqual(sandboxes.map(() => 'control-plane'))
    }
    expect(vmDirs(runtime)).toEqual([])
  }, 600_000)
})
