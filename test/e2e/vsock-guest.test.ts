import { describe, expect, test } from 'vitest'
import { runInSandbox } from '../../native/test/guest/run-in-sandbox.ts'
import { runtimeDir } from './support.js'

/**
 * The vsock addon's in-guest suite (native/test/guest/vsock-loopback.mjs), run through the
 * harness in both fixture guests. The host has no vsock; the guest's vsock_loopback (CID 1) does.
 */
async function guestSuite(arch: 'x86_64' | 'aarch64') {
  const { exitCode, output } = await runInSandbox(arch, 'test/guest/vsock-loopback.mjs', { runtimeDir: runtimeDir() })
  expect(exitCode, output).toBe(0)
  const summary = JSON.parse(output.trim().split('\n').at(-1)!).summary as { passed: number; failed: number }
  expect(summary.failed, output).toBe(0)
  expect(summary.passed).toBeGreaterThanOrEqual(11)
  return output
}

describe('vsock addon inside the guest (vsock_loopback)', () => {
  test('x86_64: listen/connect, 64 MiB each way, backpressure, half-close, 200 connections, refusals', async () => {
    const output = await guestSuite('x86_64')
    expect(output).toMatch(/^ok \d+ - .*64 MiB/m)
    expect(output).toMatch(/^ok \d+ - .*200 concurrent/m)
  })

  test('aarch64 (the cross-compiled prebuild): the same suite passes', async () => {
    await guestSuite('aarch64')
  })
})
