import { Sandbox } from '@stereos/harness'
import { describe, expect, test } from 'vitest'
import { processExists, runtimeDir, vmDirs } from './support.js'

describe('several sandboxes from one process', () => {
  test('4 VMs boot in parallel with distinct ports and dirs, all ready, all shut down cleanly', async () => {
    const runtime = runtimeDir()
    const sandboxes = await Promise.all([0, 1, 2, 3].map(() => Sandbox.boot({ arch: 'x86_64', runtimeDir: runtime, controlPlane: 'tcp', bootstrap: 'none', bootTimeoutMs: 240_000 })))
    try {
      const ports = sandboxes.flatMap((s) => [s.info.ports.control, s.info.ports.ssh])
      expect(new Set(ports).size).toBe(8)
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
