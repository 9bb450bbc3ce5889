/**
 * @stereos/vsock: AF_VSOCK stream sockets and vhost-vsock CID reservation for Node.
 *
 * The native addon is loaded on first use, so importing this module works everywhere;
 * hostHasVsock() and allocateCid() need no addon at all.
 */
export type { Binding } from './binding.js'
export {
  allocateCid,
  FIRST_GUEST_CID,
  LAST_GUEST_CID,
  reserveCid,
  VHOST_VSOCK_DEVICE,
  type AllocateOptions,
  type CidReservation,
  type ReserveFn,
  type ReserveOptions,
} from './cid.js'
export { errnoError, type ErrnoError } from './errors.js'
export { hostHasVsock, localCid, type HostCheckOptions, type VsockHostCheck } from './host.js'
export { addonCandidates, loadBinding, missingAddonMessage, packageRoot, platformTag } from './load.js'
export { listen, VsockServer, type ListenOptions, type VsockServerEvents } from './server.js'
export {
  connect,
  DEFAULT_CONNECT_TIMEOUT_MS,
  VsockSocket,
  type ConnectOptions,
  type VsockAddress,
  type VsockSocketOptions,
} from './socket.js'

/** Well-known CIDs and the "any" values. */
export const VMADDR_CID_ANY = 0xffffffff
export const VMADDR_CID_HYPERVISOR = 0
export const VMADDR_CID_LOCAL = 1
export const VMADDR_CID_HOST = 2
export const VMADDR_PORT_ANY = 0xffffffff
