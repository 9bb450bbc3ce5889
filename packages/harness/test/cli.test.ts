import { mkdtempSync, symlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { execa } from 'execa'
import { describe, expect, test } from 'vitest'

const cli = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'cli', 'main.js')

describe('stereos-harness CLI (built bin)', () => {
  test('doctor --json reports QEMU, KVM and vsock with fixes, and exit 0 where QEMU exists', async () => {
    const result = await execa(process.execPath, [cli, 'doctor', '--json'], { reject: false })
    expect(result.exitCode).toBe(0)
    const report = JSON.parse(result.stdout) as { canBoot: boolean; checks: { name: string; status: string; detail: string; fix?: string }[] }
    expect(report.canBoot).toBe(true)
    const names = report.checks.map((c) => c.name)
    expect(names).toEqual(expect.arrayContaining(['node', 'qemu-system-x86_64', 'qemu-system-aarch64', 'qemu-img', 'kvm', 'vhost-vsock']))
    for (const check of report.checks.filter((c) => c.status === 'fail')) expect(check.fix).toBeTruthy()
  })

  test('doctor exits 1 and prints the install command when no QEMU is on PATH', async () => {
    // A PATH with only this Node: no qemu-system-*, no qemu-img.
    const bin = mkdtempSync(join(tmpdir(), 'sh-path-'))
    symlinkSync(process.execPath, join(bin, 'node'))
    const result = await execa(process.execPath, [cli, 'doctor'], { reject: false, env: { PATH: bin }, extendEnv: false })
    expect(result.exitCode).toBe(1)
    expect(result.stdout).toMatch(/FAIL\s+qemu-system-x86_64\s+not found on PATH\n\s+fix: apt-get install qemu-system-x86/)
    expect(result.stdout).toMatch(/FAIL\s+qemu-img .*\n\s+fix: apt-get install qemu-utils/)
    expect(result.stdout).toContain('This host cannot boot any guest')
  })

  test('boot with invalid input fails with the cause and exit 1', async () => {
    const result = await execa(process.execPath, [cli, 'boot', '--mixtape', '/nonexistent/mixtape'], { reject: false })
    expect(result.exitCode).toBe(1)
    expect(result.stderr).toContain('Mixtape directory /nonexistent/mixtape does not exist')
    expect(result.stderr).toContain('Fix: ')
    const bad = await execa(process.execPath, [cli, 'boot', '--arch', 'sparc'], { reject: false })
    expect(bad.exitCode).toBe(1)
    expect(bad.stderr).toContain('--arch must be x86_64 or aarch64, got sparc')
  })

  test('prune --unused-since takes ISO 8601 or Unix seconds; anything else, or with --templates, fails with the fix', async () => {
    const env = { STEREOS_HARNESS_CACHE: mkdtempSync(join(tmpdir(), 'sh-cli-cache-')), MB_CONFIG_DIR: mkdtempSync(join(tmpdir(), 'sh-cli-mb-')) }
    const prune = (...args: string[]) => execa(process.execPath, [cli, 'prune', '--json', ...args], { reject: false, env })
    for (const since of ['2026-11-30T06:00:00Z', '1796000000']) {
      const ok = await prune('--unused-since', since)
      expect(ok.exitCode, ok.stderr).toBe(0)
      expect(JSON.parse(ok.stdout).templates).toEqual({ removed: [], staging: [], freedBytes: 0 })
    }
    const bad = await prune('--unused-since', 'yesterday')
    expect(bad.exitCode).toBe(1)
    expect(bad.stderr).toContain('--unused-since must be an ISO 8601 time or Unix seconds, got yesterday')
    expect(bad.stderr).toContain('Fix: ')
    const both = await prune('--templates', '--unused-since', '1796000000')
    expect(both.exitCode).toBe(1)
    expect(both.stderr).toContain('--templates and --unused-since do not go together')
  })
})
