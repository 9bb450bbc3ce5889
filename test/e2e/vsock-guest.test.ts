import { chmodSync, cpSync, mkdirSync, mkdtempSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Sandbox, type Arch } from '@stereos/harness'
import { describe, expect, test } from 'vitest'
import { repoRoot, runtimeDir, waitForFile } from './support.js'

const NODE_ARCH: Record<Arch, string> = { x86_64: 'x64', aarch64: 'arm64' }

/**
 * The vsock addon's in-guest suite (native/test/guest/vsock-loopback.mjs), run through the
 * harness: boot the fixture, share the addon build for the guest's arch and the script, have
 * agentd start it, collect its TAP and summary from the share. The host has no vsock; the
 * guest's vsock_loopback (CID 1) does.
 */
async function runGuestSuite(arch: Arch): Promise<{ summary: { passed: number; failed: number; skipped: number }; output: string }> {
  const native = join(repoRoot, 'native')
  const share = join(mkdtempSync(join(tmpdir(), `sh-vsock-${arch}-`)), 'share')
  mkdirSync(share)
  cpSync(join(native, 'package.json'), join(share, 'package.json'))
  cpSync(join(native, 'dist'), join(share, 'dist'), { recursive: true })
  cpSync(join(native, 'prebuilds', `linux-${NODE_ARCH[arch]}`), join(share, 'prebuilds', `linux-${NODE_ARCH[arch]}`), { recursive: true })
  cpSync(join(native, 'test', 'guest', 'vsock-loopback.mjs'), join(share, 'test', 'guest', 'vsock-loopback.mjs'))
  chmodSync(share, 0o777) // the agent user writes its results here
  const cmd = 'node --expose-gc /mnt/s/test/guest/vsock-loopback.mjs > /mnt/s/result.txt 2>&1; echo $? > /mnt/s/exit-code'
  const jcard = `[[agents]]\nname = "vsock-suite"\nharness = "custom"\ntype = "native"\nprompt = ${JSON.stringify(cmd)}\n`
  await using sandbox = await Sandbox.boot({ arch, runtimeDir: runtimeDir(), resources: { memory: '1GiB' }, shared: [{ host: share, guest: '/mnt/s' }], jcard, bootTimeoutMs: 240_000 })
  const exitCode = (await waitForFile(join(share, 'exit-code'), 600_000)).trim()
  const output = readFileSync(join(share, 'result.txt'), 'utf8')
  const last = output.trim().split('\n').at(-1)!
  expect(exitCode, output).toBe('0')
  return { summary: JSON.parse(last).summary, output }
}

describe('vsock addon inside the guest (vsock_loopback)', () => {
  test('x86_64: listen/connect, 64 MiB each way, backpressure, half-close, 200 connections, refusals', async () => {
    const { summary, output } = await runGuestSuite('x86_64')
    expect(summary.failed, output).toBe(0)
    expect(summary.passed).toBeGreaterThanOrEqual(11)
    expect(output).toMatch(/^ok \d+ - .*64 MiB/m)
    expect(output).toMatch(/^ok \d+ - .*200 concurrent/m)
  })

  test('aarch64 (the cross-compiled prebuild): the same suite passes', async () => {
    const { summary, output } = await runGuestSuite('aarch64')
    expect(summary.failed, output).toBe(0)
    expect(summary.passed).toBeGreaterThanOrEqual(11)
  })
})
