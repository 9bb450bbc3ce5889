import { closeSync, constants, openSync, readFileSync, statSync } from 'node:fs'
import { VHOST_VSOCK_DEVICE } from './cid.js'
import { errnoError } from './errors.js'
import { loadBinding } from './load.js'

export interface VsockHostCheck {
  ok: boolean
  /** Why vsock cannot be used, or what was found when it can. */
  reason: string
}

export interface HostCheckOptions {
  /** Default /dev/vhost-vsock. */
  device?: string
  /** Default /proc/version. */
  procVersion?: string
  platform?: NodeJS.Platform
}

/**
 * Can this host give guests vsock? Linux, not WSL (its kernel has no vhost-vsock), the
 * vhost-vsock character device present and openable read/write by this user. Needs no addon:
 * `doctor` can ask even where the addon is not built.
 */
export function hostHasVsock(options: HostCheckOptions = {}): VsockHostCheck {
  const device = options.device ?? VHOST_VSOCK_DEVICE
  const platform = options.platform ?? process.platform
  if (platform !== 'linux') return { ok: false, reason: `vhost-vsock needs a Linux host (this is ${platform})` }
  let version = ''
  try {
    version = readFileSync(options.procVersion ?? '/proc/version', 'utf8')
  } catch {}
  if (/microsoft|wsl/i.test(version)) {
    return { ok: false, reason: 'WSL: its kernel offers no vhost-vsock to guests (the TCP control plane is used)' }
  }
  let st
  try {
    st = statSync(device)
  } catch (err) {
    const e = err as NodeJS.ErrnoException
    if (e.code === 'ENOENT') {
      return { ok: false, reason: `${device} does not exist: load the vhost_vsock kernel module (sudo modprobe vhost_vsock)` }
    }
    return { ok: false, reason: `${device}: ${e.code ?? e.message}` }
  }
  if (!st.isCharacterDevice()) return { ok: false, reason: `${device} exists but is not a character device` }
  let fd: number
  try {
    fd = openSync(device, constants.O_RDWR)
  } catch (err) {
    const e = err as NodeJS.ErrnoException
    if (e.code === 'EACCES' || e.code === 'EPERM') {
      const mode = (st.mode & 0o777).toString(8).padStart(4, '0')
      return {
        ok: false,
        reason:
          `no read/write permission on ${device} (mode ${mode}, owner ${st.uid}:${st.gid}) for uid ${process.getuid?.() ?? '?'}: ` +
          'add a udev rule (KERNEL=="vhost-vsock", GROUP="kvm", MODE="0660") and join the kvm group',
      }
    }
    if (e.code === 'ENODEV' || e.code === 'ENXIO') {
      return { ok: false, reason: `${device} has no driver behind it: load the vhost_vsock kernel module (sudo modprobe vhost_vsock)` }
    }
    return { ok: false, reason: `opening ${device} read/write failed: ${e.code ?? e.message}` }
  }
  closeSync(fd)
  return { ok: true, reason: `${device} is present and opens read/write` }
}

/**
 * This machine's own CID (IOCTL_VM_SOCKETS_GET_LOCAL_CID on /dev/vsock): the guest CID inside a
 * VM, 2 on a host, VMADDR_CID_ANY (2^32-1) when no transport assigns one.
 */
export function localCid(): number {
  const r = loadBinding().localCid()
  if (r < 0) throw errnoError(r, 'ioctl', { path: '/dev/vsock', detail: 'IOCTL_VM_SOCKETS_GET_LOCAL_CID' })
  return r
}
