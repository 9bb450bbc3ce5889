import type { QemuSpec } from '../../src/vmm/argv.js'
import { PROFILES } from '../../src/vmm/profile.js'

/** A complete QemuSpec for argv tests; each test overrides what it is about. */
export function qemuSpec(overrides: Partial<QemuSpec> = {}): QemuSpec {
  return {
    profile: PROFILES.x86_64,
    accel: 'tcg',
    cpus: 2,
    memoryMiB: 512,
    boot: { kind: 'kernel', kernel: '/m/bzImage', initrd: '/m/initrd', cmdline: 'console=ttyS0 root=/dev/vda' },
    disk: { path: '/vm/disk.qcow2', format: 'qcow2' },
    qmpSocket: '/vm/qmp.sock',
    serialLog: '/vm/serial.log',
    pidfile: '/vm/qemu.pid',
    network: {
      mode: 'user',
      restrict: false,
      forwards: [
        { host: 2222, guest: 22, proto: 'tcp' },
        { host: 4444, guest: 1024, proto: 'tcp' },
        { host: 8080, guest: 80, proto: 'tcp' },
      ],
    },
    shares: [],
    ...overrides,
  }
}

/** The values that follow each occurrence of `flag` in an argv. */
export function after(argv: string[], flag: string): string[] {
  return argv.flatMap((arg, i) => (arg === flag ? [argv[i + 1]!] : []))
}
