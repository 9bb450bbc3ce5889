import { accessSync, constants, existsSync } from 'node:fs'
import { execa } from 'execa'
import type { Arch } from '../config/options.js'
import { hostArch } from '../host/arch.js'
import { probeKvm } from '../host/kvm.js'
import { which } from '../host/which.js'
import { PROFILES } from '../vmm/profile.js'
import { vsockAvailability } from '../control/plane.js'
import { loadVsock, type LoadVsock } from '../control/vsock-module.js'
import { probeNetns, type NetnsSupport } from '../vmm/network/netns.js'
import { egressAvailable } from '../vmm/network/netns-egress.js'

export type CheckStatus = 'ok' | 'warn' | 'fail'

export interface Check {
  name: string
  status: CheckStatus
  detail: string
  fix?: string
}

export interface DoctorReport {
  checks: Check[]
  /** False when no guest of any architecture can boot on this host. */
  canBoot: boolean
}

const QEMU_PACKAGE: Record<Arch, string> = { x86_64: 'qemu-system-x86', aarch64: 'qemu-system-arm' }

/** Everything the harness needs from the host, each with the fix when it is missing. */
export async function runDoctor(): Promise<DoctorReport> {
  const checks: Check[] = []
  const native = hostArch()
  checks.push(nodeCheck())

  const bootable: Arch[] = []
  for (const arch of ['x86_64', 'aarch64'] as const) {
    const check = await qemuCheck(arch)
    checks.push(check)
    if (check.status === 'ok') bootable.push(arch)
  }
  const qemuImg = which('qemu-img')
  checks.push(
    qemuImg
      ? { name: 'qemu-img', status: 'ok', detail: qemuImg }
      : { name: 'qemu-img', status: 'fail', detail: 'not found on PATH', fix: 'apt-get install qemu-utils' },
  )
  checks.push(
    which('setpriv')
      ? { name: 'setpriv', status: 'ok', detail: 'QEMU is started with --pdeathsig KILL and dies with its runner' }
      : {
          name: 'setpriv',
          status: 'warn',
          detail: 'not found: a SIGKILLed runner leaves QEMU running until the next sweep',
          fix: 'apt-get install util-linux',
        },
  )

  if (native) {
    const kvm = await probeKvm(native)
    checks.push(
      kvm.usable
        ? { name: 'kvm', status: 'ok', detail: `${native} guests run with KVM` }
        : { name: 'kvm', status: 'warn', detail: `${kvm.reason}; guests run under TCG emulation (slower)`, ...(kvm.fix ? { fix: kvm.fix } : {}) },
    )
  }
  checks.push(await vsockCheck())
  const netns = await probeNetns()
  checks.push(netnsCheck(netns))
  if (netns.ok) checks.push(egressCheck(netns.userns))
  for (const arch of ['x86_64', 'aarch64'] as const) {
    const fw = PROFILES[arch].efiCode.find((path) => existsSync(path))
    checks.push(
      fw
        ? { name: `firmware ${arch}`, status: 'ok', detail: fw }
        : {
            name: `firmware ${arch}`,
            status: 'warn',
            detail: 'no EFI firmware: only mixtapes with kernel artifacts can boot',
            fix: arch === 'x86_64' ? 'apt-get install ovmf' : 'apt-get install qemu-efi-aarch64',
          },
    )
  }
  return { checks, canBoot: bootable.length > 0 && qemuImg !== undefined }
}

function nodeCheck(): Check {
  const [major = 0, minor = 0] = process.versions.node.split('.').map(Number)
  const ok = major > 22 || (major === 22 && minor >= 12)
  return ok
    ? { name: 'node', status: 'ok', detail: process.version }
    : {
        name: 'node',
        status: 'warn',
        detail: `${process.version}: Vitest 5 and this harness need Node >= 22.12`,
        fix: 'install Node 22.12+ (or add the npm package `node@24` as a devDependency)',
      }
}

async function qemuCheck(arch: Arch): Promise<Check> {
  const binary = PROFILES[arch].qemuBinary
  const path = which(binary)
  if (!path) return { name: binary, status: arch === hostArch() ? 'fail' : 'warn', detail: 'not found on PATH', fix: `apt-get install ${QEMU_PACKAGE[arch]}` }
  const result = await execa(path, ['--version'], { reject: false, timeout: 10_000 })
  const version = /version (\S+)/.exec(result.stdout)?.[1]
  if (result.exitCode !== 0 || !version)
    return { name: binary, status: 'fail', detail: `${path} --version failed: ${result.stderr.trim()}`, fix: `reinstall ${QEMU_PACKAGE[arch]}` }
  return { name: binary, status: 'ok', detail: `${version} (${path})` }
}

/**
 * mb's HostHasVsock (STEREOS-FACTS §5.7) plus the permission and addon checks, asked the way a
 * boot asks them, so the detail says which control plane `controlPlane: 'auto'` will pick.
 */
export async function vsockCheck(load: LoadVsock = loadVsock): Promise<Check> {
  const name = 'vhost-vsock'
  const found = await vsockAvailability(load)
  if (found.ok) {
    return {
      name,
      status: 'ok',
      detail:
        `${found.reason}; controlPlane 'auto' uses vsock (a kernel-reserved CID per VM, no control port forward). ` +
        "Note: ANY local user can open AF_VSOCK to a guest's CID, and stereosd has no authentication, so on a host shared with other users " +
        "they can take over the VM (inject an SSH key, read its secrets); use controlPlane: 'tcp' there (private unix sockets, see the 'private forwards' check)",
    }
  }
  const detail = `${found.reason}; controlPlane 'auto' uses TCP through QEMU's port forward (who can reach it: see 'private forwards')`
  const fix = vsockFix(found.reason)
  return fix ? { name, status: 'warn', detail, fix } : { name, status: 'warn', detail }
}

function vsockFix(reason: string): string | undefined {
  if (/WSL|needs a Linux host/.test(reason)) return undefined
  if (/@stereos\/vsock/.test(reason)) return 'build the addon: npm run build -w native'
  if (/permission/.test(reason)) return 'a udev rule: KERNEL=="vhost-vsock", GROUP="kvm", MODE="0660" (and join the kvm group)'
  return 'sudo modprobe vhost_vsock (and add it to /etc/modules-load.d/)'
}

/**
 * Who can reach a VM's control plane, agent and sshd when they go through SLIRP forwards: only
 * this user (QEMU in a private network namespace, forwards as 0600 unix sockets), or every local
 * user (TCP on 127.0.0.1: stereosd has no authentication).
 */
export function netnsCheck(support: NetnsSupport): Check {
  const name = 'private forwards'
  if (support.ok) {
    return {
      name,
      status: 'ok',
      detail: `${support.detail}: the control-plane, agent and SSH forwards are 0600 unix sockets in the VM dir, reachable only by this user (and root)`,
    }
  }
  return {
    name,
    status: 'warn',
    detail:
      `${support.reason}. QEMU then forwards stereosd, the agent and sshd to TCP ports on 127.0.0.1, which EVERY local user can connect to; ` +
      'stereosd has no authentication, so another user of this host can inject an SSH key, become root in the guest and read its secrets and agent token (fine on a single-user CI runner)',
    fix: support.fix,
  }
}

/** Outbound network for guests whose QEMU runs in a private namespace. */
function egressCheck(userns: boolean): Check {
  const name = 'guest egress'
  const slirp = egressAvailable()
  if (!slirp) {
    return {
      name,
      status: 'warn',
      detail: "slirp4netns not found: guests in network.mode 'nat' have no outbound network (the harness still reaches them)",
      fix: 'apt-get install slirp4netns',
    }
  }
  if (userns) {
    try {
      accessSync('/dev/net/tun', constants.R_OK | constants.W_OK)
    } catch {
      return {
        name,
        status: 'warn',
        detail: '/dev/net/tun is not readable and writable by this user: slirp4netns cannot give guests outbound network',
        fix: "chmod 0666 /dev/net/tun (the usual mode; access is still confined to the caller's namespaces)",
      }
    }
  }
  return { name, status: 'ok', detail: `${slirp}: guests reach out through a second user-mode NAT; the host's 127.0.0.1 stays closed to them` }
}
