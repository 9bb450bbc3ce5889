import { accessSync, constants, existsSync } from 'node:fs'
import { execa } from 'execa'
import type { Arch } from '../config/options.js'
import { hostArch } from './arch.js'
import { PROFILES } from '../vmm/profile.js'

export interface KvmProbe {
  usable: boolean
  /** Why KVM cannot be used; undefined when usable. */
  reason?: string
  fix?: string
}

const probes = new Map<string, Promise<KvmProbe>>()

/**
 * Can QEMU actually run a guest with KVM here? `/dev/kvm` existing is not enough: some hosts
 * (PVM-backed nested setups) open it fine and then abort on the first vCPU MSR write, or hang
 * normal kernels. We check the device, the known-bad backend, then start QEMU paused with
 * `-cpu host` and quit it over QMP. Memoised per process and binary.
 */
export function probeKvm(arch: Arch, qemuBinary = PROFILES[arch].qemuBinary): Promise<KvmProbe> {
  const key = `${arch}:${qemuBinary}`
  let probe = probes.get(key)
  if (!probe) {
    probe = runProbe(arch, qemuBinary)
    probes.set(key, probe)
  }
  return probe
}

async function runProbe(arch: Arch, qemuBinary: string): Promise<KvmProbe> {
  if (arch !== hostArch()) {
    return { usable: false, reason: `the guest is ${arch} and this host is ${process.arch}; KVM runs only the host's own architecture` }
  }
  if (!existsSync('/dev/kvm')) {
    return { usable: false, reason: '/dev/kvm does not exist', fix: 'enable virtualization in the BIOS/cloud instance and load kvm_intel or kvm_amd' }
  }
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK)
  } catch {
    return {
      usable: false,
      reason: '/dev/kvm is not readable and writable by this user',
      fix: 'add the user to the kvm group or install a udev rule giving /dev/kvm mode 0666',
    }
  }
  if (existsSync('/sys/module/kvm_pvm')) {
    return { usable: false, reason: '/dev/kvm is backed by kvm_pvm, which cannot boot normal kernels' }
  }
  const profile = PROFILES[arch]
  const result = await execa(
    qemuBinary,
    ['-machine', `${profile.machine},accel=kvm`, '-cpu', 'host', '-nodefaults', '-display', 'none', '-S', '-qmp', 'stdio'],
    { input: '{"execute":"qmp_capabilities"}\n{"execute":"quit"}\n', reject: false, timeout: 15_000 },
  )
  if (result.exitCode === 0) return { usable: true }
  const detail = (result.stderr || result.stdout || `exit ${result.exitCode}`).trim().split('\n').slice(-2).join(' / ')
  return { usable: false, reason: `QEMU could not start a KVM vCPU (${detail})` }
}
