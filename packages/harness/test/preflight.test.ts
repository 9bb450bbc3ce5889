import { describe, expect, test } from 'vitest'
import { HarnessError } from '../src/errors.js'
import { hostPreflight, type PreflightDeps } from '../src/host/preflight.js'

/** A host with QEMU and qemu-img, KVM as `kvm` says, and mixtapes that resolve. */
function host(kvm: Awaited<ReturnType<PreflightDeps['probeKvm']>>, overrides: Partial<PreflightDeps> = {}) {
  const calls: string[] = []
  const deps: PreflightDeps = {
    which: (name) => (name === 'qemu-img' ? '/usr/bin/qemu-img' : undefined),
    probeKvm: async () => {
      calls.push('kvm')
      return kvm
    },
    resolveMixtape: async (ref) => {
      calls.push(`mixtape ${ref}`)
    },
    ...overrides,
  }
  return { deps, calls }
}

const noKvm = { usable: false, reason: '/dev/kvm does not exist', fix: 'enable virtualization and load kvm_intel or kvm_amd' }
const qemu = { arch: 'x86_64', qemuBinary: process.execPath } as const

async function refusal(p: Promise<unknown>): Promise<HarnessError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  )
  expect(err).toBeInstanceOf(HarnessError)
  return err as HarnessError
}

describe('hostPreflight: what a run needs of the host, before any VM boots (#20)', () => {
  test('a missing QEMU binary: QEMU_NOT_FOUND naming the package, nothing else probed', async () => {
    const { deps, calls } = host({ usable: true })
    const err = await refusal(hostPreflight({ arch: 'x86_64', qemuBinary: 'qemu-system-x86_64-missing' }, () => {}, deps))
    expect(err.code).toBe('QEMU_NOT_FOUND')
    expect(err.message).toMatch(/^QEMU binary qemu-system-x86_64-missing was not found on PATH/)
    expect(err.fix).toMatch(/install QEMU|doctor/)
    expect(calls).toEqual([])
  })

  test('a missing qemu-img: QEMU_NOT_FOUND naming qemu-utils', async () => {
    const { deps } = host({ usable: true }, { which: () => undefined })
    const err = await refusal(hostPreflight(qemu, () => {}, deps))
    expect(err.code).toBe('QEMU_NOT_FOUND')
    expect(err.fix).toContain('qemu-utils')
  })

  test("no KVM with accel 'auto': a warning naming the fix, TCG, and the run goes on", async () => {
    const { deps, calls } = host(noKvm)
    const result = await hostPreflight(qemu, () => {}, deps)
    expect(result.accel).toBe('tcg')
    expect(result.warnings).toEqual([
      "KVM is not usable (/dev/kvm does not exist): guests run under TCG emulation, several times slower. Fix: enable virtualization and load kvm_intel or kvm_amd. Set accel: 'tcg' to silence this.",
    ])
    expect(calls).toEqual(['kvm', 'mixtape fixture'])
  })

  test("no KVM with accel 'kvm': an error naming the reason and the fix", async () => {
    const { deps } = host(noKvm)
    const err = await refusal(hostPreflight({ ...qemu, accel: 'kvm' }, () => {}, deps))
    expect(err.code).toBe('HOST')
    expect(err.message).toMatch(/^accel is 'kvm' but KVM cannot run this guest: \/dev\/kvm does not exist/)
    expect(err.fix).toBe("enable virtualization and load kvm_intel or kvm_amd; or set accel: 'auto' to run under TCG emulation")
  })

  test("accel 'tcg' probes no KVM and warns nothing; usable KVM warns nothing", async () => {
    const tcg = host(noKvm)
    expect(await hostPreflight({ ...qemu, accel: 'tcg' }, () => {}, tcg.deps)).toEqual({ arch: 'x86_64', accel: 'tcg', warnings: [] })
    expect(tcg.calls).toEqual(['mixtape fixture'])
    expect(await hostPreflight(qemu, () => {}, host({ usable: true }).deps)).toEqual({ arch: 'x86_64', accel: 'kvm', warnings: [] })
  })

  test('a mixtape that does not resolve: its own error, before any VM', async () => {
    const { deps } = host(
      { usable: true },
      {
        resolveMixtape: async (ref) => {
          throw new HarnessError('MIXTAPE_NOT_FOUND', `mixtape ${ref} is not in the cache`, { fix: `stereos-harness pull ${ref}` })
        },
      },
    )
    const err = await refusal(hostPreflight({ ...qemu, mixtape: 'ghcr.io/x/y:1' }, () => {}, deps))
    expect(err.message).toMatch(/^mixtape ghcr\.io\/x\/y:1 is not in the cache/)
    expect(err.fix).toBe('stereos-harness pull ghcr.io/x/y:1')
  })

  test('invalid options: INVALID_OPTIONS before any probe', async () => {
    const { deps, calls } = host({ usable: true })
    const err = await refusal(hostPreflight({ accel: 'fast' }, () => {}, deps))
    expect(err.code).toBe('INVALID_OPTIONS')
    expect(calls).toEqual([])
  })
})
