import { existsSync } from 'node:fs'
import { describe, expect, test } from 'vitest'
import { hostArch } from '../src/host/arch.js'
import { probeKvm } from '../src/host/kvm.js'

describe('KVM probe', () => {
  const native = hostArch()!

  test('a foreign guest architecture never uses KVM', async () => {
    const foreign = native === 'x86_64' ? 'aarch64' : 'x86_64'
    await expect(probeKvm(foreign)).resolves.toMatchObject({ usable: false, reason: expect.stringContaining('KVM runs only the host') })
  })

  test('the probe agrees with the host: unusable with a named reason, or usable and proven by QEMU', async () => {
    const probe = await probeKvm(native)
    if (!existsSync('/dev/kvm')) {
      expect(probe).toMatchObject({ usable: false, reason: '/dev/kvm does not exist' })
    } else if (existsSync('/sys/module/kvm_pvm')) {
      // These development machines: /dev/kvm opens, but the PVM backend cannot boot kernels.
      expect(probe).toMatchObject({ usable: false, reason: expect.stringContaining('kvm_pvm') })
    } else {
      expect(probe.usable || /QEMU could not start a KVM vCPU|not readable/.test(probe.reason ?? '')).toBe(true)
    }
  })

  const kvmReachable = existsSync('/dev/kvm') && !existsSync('/sys/module/kvm_pvm')
  test.skipIf(!kvmReachable)('a QEMU that cannot start a KVM vCPU is reported as such (needs a /dev/kvm that is not PVM)', async () => {
    await expect(probeKvm(native, 'false')).resolves.toMatchObject({ usable: false, reason: expect.stringContaining('QEMU could not start a KVM vCPU') })
  })
})
