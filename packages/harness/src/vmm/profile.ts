import type { Arch } from '../config/options.js'

export type Accel = 'kvm' | 'tcg'

/** What differs between guest architectures (mb's LinuxAMD64/ARM64PlatformConfig, §5.1). */
export interface PlatformProfile {
  arch: Arch
  qemuBinary: string
  machine: string
  /** -cpu for each accelerator. */
  cpu: Record<Accel, string>
  /** EFI code firmware, first existing wins; used only when the mixtape has no kernel files. */
  efiCode: string[]
  /**
   * QEMU's `vmgenid` device (ACPI, so x86 only here): every QEMU start has a new generation ID,
   * and a guest restored from a template sees it change and reseeds its RNG at once.
   */
  vmgenid: boolean
}

export const PROFILES: Record<Arch, PlatformProfile> = {
  x86_64: {
    arch: 'x86_64',
    qemuBinary: 'qemu-system-x86_64',
    machine: 'q35',
    cpu: { kvm: 'host', tcg: 'max' },
    vmgenid: true,
    efiCode: [
      '/usr/share/qemu/edk2-x86_64-code.fd',
      '/usr/share/OVMF/OVMF_CODE.fd',
      '/usr/share/OVMF/OVMF_CODE_4M.fd',
      '/usr/share/edk2/ovmf/OVMF_CODE.fd',
      '/usr/share/edk2/x64/OVMF_CODE.fd',
    ],
  },
  aarch64: {
    arch: 'aarch64',
    qemuBinary: 'qemu-system-aarch64',
    machine: 'virt,highmem=on',
    // Emulated pointer authentication makes `max` ~4x slower to boot under TCG (MACHINE-FACTS).
    cpu: { kvm: 'host', tcg: 'max,pauth=off' },
    // virt boots with a device tree, and QEMU 7.2 offers vmgenid through ACPI only.
    vmgenid: false,
    efiCode: ['/usr/share/qemu/edk2-aarch64-code.fd', '/usr/share/AAVMF/AAVMF_CODE.fd', '/usr/share/edk2/aarch64/QEMU_CODE.fd'],
  },
}
