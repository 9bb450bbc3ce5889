import type { Accel, PlatformProfile } from './profile.js'

/** A 127.0.0.1 host port that QEMU forwards into the guest. */
export interface HostForward {
  host: number
  guest: number
  proto: 'tcp' | 'udp'
}

/**
 * A guest address and port that QEMU's SLIRP hands to a command, one process per connection
 * (`guestfwd=tcp:ADDR:PORT-cmd:...`): how the guest reaches a declared host port (network.hostPorts).
 */
export interface GuestForward {
  addr: string
  port: number
  /** The program and its arguments; its stdin and stdout are the guest's connection. */
  command: string[]
}

export interface QemuSpec {
  profile: PlatformProfile
  accel: Accel
  cpus: number
  memoryMiB: number
  /** Direct kernel boot, as mb does for every mixtape with kernel artifacts (boot refuses disk-only ones). */
  boot: { kind: 'kernel'; kernel: string; initrd: string; cmdline: string }
  disk: { path: string; format: 'raw' | 'qcow2' }
  qmpSocket: string
  serialLog: string
  pidfile: string
  /** `none`: no NIC at all; `user`: SLIRP, `restrict` cuts the guest off from host and outside (forwards still work). */
  network: { mode: 'none' } | { mode: 'user'; restrict: boolean; forwards: HostForward[]; guestForwards?: GuestForward[] }
  /** Kernel-reserved guest CID and the fd QEMU inherits for it. */
  vsock?: { cid: number; vhostfd?: number }
  shares: { tag: string; host: string; readonly: boolean }[]
  /** A read-only raw image on its own virtio-blk device, found in the guest by `serial` (the harness share). */
  imageDisk?: { path: string; serial: string }
}

/**
 * QEMU argv in mb's order (STEREOS-FACTS §5.2), with three deliberate differences:
 * hostfwd binds 127.0.0.1 (never all interfaces), TCG gets `-accel tcg,thread=multi` so
 * smp > 1 runs in parallel, and `-no-reboot` turns a guest reboot or panic into a QEMU exit
 * that the harness can see instead of a silent boot loop.
 */
export function buildQemuArgv(spec: QemuSpec): string[] {
  const { profile } = spec
  const argv: string[] = spec.accel === 'kvm' ? ['-machine', `${profile.machine},accel=kvm`] : ['-machine', profile.machine, '-accel', 'tcg,thread=multi']
  argv.push('-cpu', profile.cpu[spec.accel], '-smp', String(spec.cpus), '-m', `${spec.memoryMiB}M`)

  argv.push('-kernel', spec.boot.kernel, '-initrd', spec.boot.initrd, '-append', spec.boot.cmdline)
  const root = `format=${spec.disk.format},file=${spec.disk.path},discard=unmap`
  // QEMU creates `if=virtio` drives' devices after every -device: with a second disk the root
  // disk is declared as a device too, first, so it stays the guest's vda (root=/dev/vda).
  if (spec.imageDisk) argv.push('-drive', `if=none,id=root-disk,${root}`, '-device', 'virtio-blk-pci,drive=root-disk')
  else argv.push('-drive', `if=virtio,${root}`)
  argv.push(
    '-qmp',
    `unix:${spec.qmpSocket},server,nowait`,
    // O_APPEND (append=on), so the host may cut the log while QEMU writes it (vmm/log-cap.ts).
    '-chardev',
    `file,id=serial0,path=${spec.serialLog},append=on`,
    '-serial',
    'chardev:serial0',
    '-nographic',
    '-nodefaults',
    '-no-user-config',
    '-no-reboot',
    '-pidfile',
    spec.pidfile,
  )
  if (profile.vmgenid) argv.push('-device', 'vmgenid,guid=auto')
  argv.push(...networkArgs(spec.network))
  if (spec.vsock) {
    const fd = spec.vsock.vhostfd === undefined ? '' : `vhostfd=${spec.vsock.vhostfd},`
    argv.push('-device', `vhost-vsock-pci,${fd}guest-cid=${spec.vsock.cid}`)
  }
  for (const share of spec.shares) {
    const model = share.readonly ? 'none' : 'mapped-xattr'
    argv.push(
      '-fsdev',
      `local,id=${share.tag},path=${share.host},security_model=${model}${share.readonly ? ',readonly=on' : ''}`,
      '-device',
      `virtio-9p-pci,fsdev=${share.tag},mount_tag=${share.tag}`,
    )
  }
  if (spec.imageDisk) {
    argv.push(
      '-drive',
      `if=none,id=image-disk,format=raw,readonly=on,file=${spec.imageDisk.path}`,
      '-device',
      `virtio-blk-pci,drive=image-disk,serial=${spec.imageDisk.serial}`,
    )
  }
  return argv
}

function networkArgs(network: QemuSpec['network']): string[] {
  if (network.mode === 'none') return ['-nic', 'none']
  const options = ['user', 'id=net0', ...(network.restrict ? ['restrict=on'] : [])]
  for (const f of network.forwards) options.push(`hostfwd=${f.proto}:127.0.0.1:${f.host}-:${f.guest}`)
  // Checked before restrict=on drops a connection, so declared host ports work in either mode.
  for (const f of network.guestForwards ?? []) options.push(`guestfwd=tcp:${f.addr}:${f.port}-cmd:${f.command.map(shellWord).join(' ')}`)
  // romfile= skips the iPXE option ROM: direct kernel boot never network-boots.
  // QEMU's option syntax: a comma inside a value is written twice.
  return ['-netdev', options.map((o) => o.replaceAll(',', ',,')).join(','), '-device', 'virtio-net-pci,netdev=net0,romfile=']
}

/** libslirp splits the command with g_shell_parse_argv: single quotes keep each word whole. */
function shellWord(word: string): string {
  return `'${word.replaceAll("'", "'\\''")}'`
}
