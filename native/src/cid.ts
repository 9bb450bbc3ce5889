import { E, errnoError } from './errors.js'
import { loadBinding } from './load.js'

/** The first CID a guest may have: 0 (hypervisor), 1 (local) and 2 (host) are reserved. */
export const FIRST_GUEST_CID = 3
/** The last: U32_MAX (VMADDR_CID_ANY) is reserved too. */
export const LAST_GUEST_CID = 0xfffffffe
export const VHOST_VSOCK_DEVICE = '/dev/vhost-vsock'

/**
 * Tries to reserve one CID: true when it is now held, false when someone else holds it (the
 * kernel's EADDRINUSE). Any other failure throws and ends the search.
 */
export type ReserveFn = (cid: number) => boolean

export interface AllocateOptions {
  /** First CID to try (default 3). */
  from?: number
  /** Last CID to try (default 2^32-2). */
  to?: number
  /** Give up after this many CIDs in use (default 65536). */
  maxAttempts?: number
}

/**
 * The allocation loop, without the device: tries `from`, `from+1`, ... until `reserve` takes one.
 * The arbiter is whatever `reserve` asks, for reserveCid() the kernel, so concurrent
 * allocators (threads, processes, users, other tools) can never both get a CID; nothing is
 * coordinated here.
 */
export function allocateCid(reserve: ReserveFn, options: AllocateOptions = {}): number {
  const from = options.from ?? FIRST_GUEST_CID
  const to = Math.min(options.to ?? LAST_GUEST_CID, LAST_GUEST_CID)
  const maxAttempts = options.maxAttempts ?? 65_536
  if (!Number.isInteger(from) || from < FIRST_GUEST_CID || from > LAST_GUEST_CID) {
    throw new RangeError(`from must be an integer CID in [${FIRST_GUEST_CID}, ${LAST_GUEST_CID}], got ${from}`)
  }
  let attempts = 0
  for (let cid = from; cid <= to; cid++) {
    if (reserve(cid)) return cid
    if (++attempts >= maxAttempts) break
  }
  const last = Math.min(to, from + attempts - 1)
  throw errnoError(-E.EADDRINUSE, 'allocateCid', { detail: `every CID from ${from} to ${last} is in use` })
}

export interface CidReservation {
  /** The reserved guest CID. */
  readonly cid: number
  /**
   * The /dev/vhost-vsock fd that holds it: hand it to QEMU as
   * `-device vhost-vsock-pci,vhostfd=<n>,guest-cid=<cid>` with the fd mapped to n through the
   * child's stdio. The CID stays reserved while any copy of the fd is open (here or in QEMU).
   */
  readonly fd: number
  /** Closes this process's copy of the fd (idempotent). */
  release(): void
  readonly released: boolean
}

export interface ReserveOptions extends AllocateOptions {
  /** Default /dev/vhost-vsock. */
  device?: string
  /**
   * Open the fd with O_CLOEXEC (default true). Passing it to QEMU through stdio (spawn's
   * `stdio: [..., fd]`) dup2()s it into the child, which clears close-on-exec on the child's
   * copy, so the default is what QEMU needs. false leaves the fd inheritable by every child
   * this process spawns afterwards, each of which would then keep the CID reserved.
   */
  cloexec?: boolean
}

function openHint(errno: number, device: string): string | undefined {
  const uid = process.getuid?.()
  switch (-Math.abs(errno)) {
    case -E.ENOENT:
      return `${device} does not exist: load the vhost_vsock kernel module (sudo modprobe vhost_vsock)`
    case -E.ENODEV:
    case -E.ENXIO:
      return `${device} has no driver behind it: load the vhost_vsock kernel module (sudo modprobe vhost_vsock)`
    case -E.EACCES:
    case -E.EPERM:
      return `no read/write permission on ${device} for uid ${uid ?? '?'}: add a udev rule (KERNEL=="vhost-vsock", GROUP="kvm", MODE="0660") and join the kvm group`
    default:
      return undefined
  }
}

/**
 * Reserves a guest CID in the kernel: opens /dev/vhost-vsock and sets the guest CID on it
 * (VHOST_VSOCK_SET_GUEST_CID), upward from `from` until the kernel does not answer EADDRINUSE.
 * The kernel refuses a CID that any other vhost-vsock fd holds, so reservations never collide,
 * across workers, processes, users and other tools. The CID is freed when the last copy of the
 * fd is closed, including when the process dies.
 */
export function reserveCid(options: ReserveOptions = {}): CidReservation {
  const device = options.device ?? VHOST_VSOCK_DEVICE
  const native = loadBinding()
  const fd = native.openVhost(device, options.cloexec ?? true)
  if (fd < 0) {
    const hint = openHint(fd, device)
    throw errnoError(fd, 'open', { path: device, ...(hint ? { detail: hint } : {}) })
  }
  let cid: number
  try {
    cid = allocateCid((candidate) => {
      const r = native.setGuestCid(fd, candidate)
      if (r === 0) return true
      if (r === -E.EADDRINUSE) return false
      throw errnoError(r, 'ioctl', { path: device, detail: `VHOST_VSOCK_SET_GUEST_CID ${candidate}` })
    }, options)
  } catch (err) {
    native.close(fd)
    throw err
  }
  let released = false
  return {
    cid,
    fd,
    get released() {
      return released
    },
    release() {
      if (released) return
      released = true
      native.close(fd)
    },
  }
}
