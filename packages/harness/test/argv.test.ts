import { describe, expect, test } from 'vitest'
import { buildQemuArgv } from '../src/vmm/argv.js'
import { PROFILES } from '../src/vmm/profile.js'
import { after, qemuSpec } from './support/qemu-spec.js'

describe('QEMU argv', () => {
  test("follows mb's order for a direct kernel boot", () => {
    const argv = buildQemuArgv(qemuSpec())
    const flags = argv.filter((a) => a.startsWith('-'))
    expect(flags).toEqual([
      '-machine',
      '-accel',
      '-cpu',
      '-smp',
      '-m',
      '-kernel',
      '-initrd',
      '-append',
      '-drive',
      '-qmp',
      '-chardev',
      '-serial',
      '-nographic',
      '-nodefaults',
      '-no-user-config',
      '-no-reboot',
      '-pidfile',
      '-device',
      '-netdev',
      '-device',
    ])
    // A restored guest sees a new generation ID and reseeds its RNG (x86_64 only: ACPI).
    expect(after(argv, '-device')[0]).toBe('vmgenid,guid=auto')
    expect(buildQemuArgv(qemuSpec({ profile: PROFILES.aarch64 })).join(' ')).not.toContain('vmgenid')
    expect(after(argv, '-append')).toEqual(['console=ttyS0 root=/dev/vda'])
    expect(after(argv, '-drive')).toEqual(['if=virtio,format=qcow2,file=/vm/disk.qcow2,discard=unmap'])
    expect(after(argv, '-qmp')).toEqual(['unix:/vm/qmp.sock,server,nowait'])
    // Opened O_APPEND, so the host can cap it while QEMU writes (vmm/log-cap.ts).
    expect(after(argv, '-chardev')).toEqual(['file,id=serial0,path=/vm/serial.log,append=on'])
    expect(after(argv, '-serial')).toEqual(['chardev:serial0'])
  })

  test("KVM uses mb's -machine accel= form and -cpu host; TCG uses multi-threaded TCG and -cpu max", () => {
    const kvm = buildQemuArgv(qemuSpec({ accel: 'kvm' }))
    expect(after(kvm, '-machine')).toEqual(['q35,accel=kvm'])
    expect(after(kvm, '-cpu')).toEqual(['host'])
    expect(kvm).not.toContain('-accel')
    const tcg = buildQemuArgv(qemuSpec())
    expect(after(tcg, '-machine')).toEqual(['q35'])
    expect(after(tcg, '-accel')).toEqual(['tcg,thread=multi'])
    expect(after(tcg, '-cpu')).toEqual(['max'])
  })

  test('aarch64 uses virt,highmem=on and avoids slow pointer-auth emulation under TCG', () => {
    const argv = buildQemuArgv(qemuSpec({ profile: PROFILES.aarch64 }))
    expect(after(argv, '-machine')).toEqual(['virt,highmem=on'])
    expect(after(argv, '-cpu')).toEqual(['max,pauth=off'])
  })

  test('every port forward binds 127.0.0.1 only', () => {
    const netdev = after(buildQemuArgv(qemuSpec()), '-netdev')[0]!
    expect(netdev).toBe('user,id=net0,hostfwd=tcp:127.0.0.1:2222-:22,hostfwd=tcp:127.0.0.1:4444-:1024,hostfwd=tcp:127.0.0.1:8080-:80')
    expect(netdev.match(/hostfwd=[a-z]+::/g)).toBeNull()
  })

  test('the vhost-vsock device appears exactly when a CID was reserved, with the inherited fd', () => {
    expect(buildQemuArgv(qemuSpec()).join(' ')).not.toContain('vhost-vsock')
    const argv = buildQemuArgv(
      qemuSpec({ vsock: { cid: 7, vhostfd: 3 }, network: { mode: 'user', restrict: false, forwards: [{ host: 2222, guest: 22, proto: 'tcp' }] } }),
    )
    expect(after(argv, '-device')).toContain('vhost-vsock-pci,vhostfd=3,guest-cid=7')
    expect(after(argv, '-netdev')[0]).not.toContain(':1024')
  })

  test('a read-only image disk (the share for templates) comes after the root disk, which then stays the guest vda', () => {
    expect(buildQemuArgv(qemuSpec()).join(' ')).not.toContain('image-disk')
    const argv = buildQemuArgv(qemuSpec({ imageDisk: { path: '/cache/share/x86_64-abcd.ext4', serial: 'stereos-harness' } }))
    const devices = after(argv, '-device')
    const root = devices.indexOf('virtio-blk-pci,drive=root-disk')
    const image = devices.indexOf('virtio-blk-pci,drive=image-disk,serial=stereos-harness')
    // if=virtio devices are created after every -device, so the root disk is a -device too, first.
    expect(root).toBeGreaterThanOrEqual(0)
    expect(image).toBeGreaterThan(root)
    expect(argv.join(' ')).not.toContain('if=virtio')
    expect(after(argv, '-drive')).toContain('if=none,id=image-disk,format=raw,readonly=on,file=/cache/share/x86_64-abcd.ext4')
  })

  test('restricted user networking: restrict=on before the forwards', () => {
    const argv = buildQemuArgv(qemuSpec({ network: { mode: 'user', restrict: true, forwards: [{ host: 4444, guest: 1024, proto: 'tcp' }] } }))
    expect(after(argv, '-netdev')).toEqual(['user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:4444-:1024'])
  })

  test('declared host ports: a guestfwd each, its command in single quotes for libslirp, commas doubled for QEMU', () => {
    const argv = buildQemuArgv(
      qemuSpec({
        network: {
          mode: 'user',
          restrict: true,
          forwards: [],
          guestForwards: [{ addr: '10.0.2.100', port: 5432, command: ['/usr/bin/node', "/it's/stdio.js", '/run/a,b/host-port-5432.sock'] }],
        },
      }),
    )
    expect(after(argv, '-netdev')).toEqual([
      "user,id=net0,restrict=on,guestfwd=tcp:10.0.2.100:5432-cmd:'/usr/bin/node' '/it'\\''s/stdio.js' '/run/a,,b/host-port-5432.sock'",
    ])
  })

  test('network none gives the guest no NIC', () => {
    const argv = buildQemuArgv(qemuSpec({ network: { mode: 'none' } }))
    expect(after(argv, '-nic')).toEqual(['none'])
    expect(argv).not.toContain('-netdev')
  })

  test('shares are 9p devices tagged share<i>; read-only ones are read-only on the host side too', () => {
    const argv = buildQemuArgv(
      qemuSpec({
        shares: [
          { tag: 'share0', host: '/src', readonly: false },
          { tag: 'share1', host: '/ro', readonly: true },
        ],
      }),
    )
    expect(after(argv, '-fsdev')).toEqual(['local,id=share0,path=/src,security_model=mapped-xattr', 'local,id=share1,path=/ro,security_model=none,readonly=on'])
    expect(after(argv, '-device')).toContain('virtio-9p-pci,fsdev=share1,mount_tag=share1')
  })
})
