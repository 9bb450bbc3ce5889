import { Sandbox } from '@stereos/harness'
import { describe, expect, test } from 'vitest'
import { processExists, runtimeDir, vmDirs } from './support.js'

describe('several sandboxes from one process', () => {
  test('4 VMs boot in parallel with distinct ports and dirs, all ready, all shut down cleanly', async () => {
    const runtime = runtimeDir()
    const sandboxes = await Promise.all(
      [0, 1, 2, 3].map(() => Sandbox.boot({ arch: 'x86_64', runtimeDir: runtime, controlPlane: 'tcp', bootstrap: 'none', bootTimeoutMs: 240_000 })),
    )
    try {
      // Host ports, or unix sockets in each VM dir where QEMU has a private network namespace.
      const ways = sandboxes.flatMap((s) => [s.info.sockets.control ?? s.info.ports.control, s.info.sockets.ssh ?? s.info.ports.ssh])
      expect(new Set(ways).size).toBe(8)
      expect(ways).not.toContain(undefined)
      expect(new Set(sandboxes.map((s) => s.info.vmDir)).size).toBe(4)
      const health = await Promise.all(sandboxes.map((s) => s.control.health()))
      expect(health.map((h) => h.state)).toEqual(['ready', 'ready', 'ready', 'ready'])
    } finally {
      const reports = await Promise.all(sandboxes.map((s) => s.shutdown({ timeoutMs: 20_000 })))
      expect(reports.map((r) => r.stoppedBy)).toEqual(['control-plane', 'control-plane', 'control-plane', 'control-plane'])
    }
    expect(sandboxes.filter((s) => processExists(s.info.pid))).toEqual([])
    expect(vmDirs(runtime)).toEqual([])
  })
})
