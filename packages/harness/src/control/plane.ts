import { HarnessError } from '../errors.js'
import { TcpTransport, type Transport } from './transport.js'
import { loadVsock, type LoadVsock, type VsockModule } from './vsock-module.js'
import { CONTROL_VSOCK_PORT, VsockTransport } from './vsock-transport.js'
import { freePort } from '../vmm/ports.js'

export type ControlPlaneMode = 'auto' | 'vsock' | 'tcp'

/** The fd number QEMU sees the reservation as: the first slot after stdin/stdout/stderr. */
export const VHOST_FD_IN_CHILD = 3

interface VsockPlane {
  kind: 'vsock'
  cid: number
  /** Our /dev/vhost-vsock fd; spawn QEMU with it at stdio index VHOST_FD_IN_CHILD. */
  fd: number
  transport: Transport
  /**
   * Closes our copy of the fd (idempotent). Boot calls it when QEMU exits, not right after the
   * spawn: the kernel would keep the CID for QEMU's copy either way, but holding ours means the
   * CID cannot pass to another VM while this Sandbox may still reconnect to it.
   */
  release(): void
}

interface TcpPlane {
  kind: 'tcp'
  /** Why vsock is not used (shown once per process in auto mode). */
  reason: string
  /** The 127.0.0.1 port QEMU forwards to stereosd's 1024 (hostfwd). */
  port: number
  transport: Transport
}

/**
 * How the host reaches stereosd for one boot. Each kind carries what it needs (a CID and fd,
 * a host port), so nothing downstream has to ask "is the port there?". A new kind (e.g. a unix
 * socket into a network namespace) is one more member here and one more case where the union
 * is switched on (planeInfo, the network plan).
 */
export type ControlPlane = VsockPlane | TcpPlane

/** SandboxInfo.transport: where stereosd is reached, without the live handles. */
export type ControlPlaneInfo =
  | { kind: 'tcp'; host: string; port: number }
  | { kind: 'vsock'; cid: number; port: number }
  /** QEMU in a private network namespace: stereosd's forward as a 0600 unix socket in the VM dir (vmm/private-network.ts). */
  | { kind: 'unix'; path: string; port: number }

export interface ControlPlaneDeps {
  load?: LoadVsock
  log?: (line: string) => void
  /** Where "vsock not used" was already said; default: once per process. */
  noted?: { done: boolean }
  /** Picks the TCP plane's host port (default: a free 127.0.0.1 port). */
  freePort?: () => Promise<number>
}

// Once-per-process cache: the "TCP, not vsock" note is said once however many VMs boot.
const processNote = { done: false }

const VSOCK_FIX =
  'load the module (sudo modprobe vhost_vsock), give this user read/write on /dev/vhost-vsock (udev rule KERNEL=="vhost-vsock", GROUP="kvm", MODE="0660"), ' +
  "then check with `stereos-harness doctor`; or use controlPlane: 'auto' or 'tcp'"

/** Whether vsock can be used here, without reserving anything (doctor asks this too). */
export async function vsockAvailability(
  load: LoadVsock = loadVsock,
): Promise<{ ok: true; vsock: VsockModule; reason: string } | { ok: false; reason: string }> {
  let vsock: VsockModule
  try {
    vsock = await load()
  } catch (err) {
    return { ok: false, reason: `the @stereos/vsock package cannot be loaded: ${(err as Error).message}` }
  }
  const host = vsock.hostHasVsock()
  if (!host.ok) return { ok: false, reason: host.reason }
  try {
    vsock.loadBinding()
  } catch (err) {
    return { ok: false, reason: `the @stereos/vsock addon cannot be loaded: ${(err as Error).message.split('\n')[0]}` }
  }
  return { ok: true, vsock, reason: host.reason }
}

/**
 * Picks the control plane for one boot. vsock reserves a CID in the kernel (unique across
 * processes, users and other tools, so concurrent boots need no coordination here); TCP is the
 * fallback wherever /dev/vhost-vsock or the addon is missing.
 */
export async function chooseControlPlane(mode: ControlPlaneMode, deps: ControlPlaneDeps = {}): Promise<ControlPlane> {
  if (mode === 'tcp') return tcpPlane("controlPlane: 'tcp' requested", deps)
  const load = deps.load ?? loadVsock
  const available = await vsockAvailability(load)
  let reason: string
  if (available.ok) {
    try {
      const r = available.vsock.reserveCid()
      return { kind: 'vsock', cid: r.cid, fd: r.fd, release: () => r.release(), transport: new VsockTransport(r.cid, CONTROL_VSOCK_PORT, load) }
    } catch (err) {
      reason = `reserving a vsock CID failed: ${(err as Error).message}`
    }
  } else {
    reason = available.reason
  }
  if (mode === 'vsock') {
    throw new HarnessError('HOST', `options.controlPlane is 'vsock' but this host cannot use vsock: ${reason}`, { fix: VSOCK_FIX })
  }
  const noted = deps.noted ?? processNote
  if (!noted.done) {
    noted.done = true
    deps.log?.(`control plane: stereosd's TCP port through QEMU's port forward, not vsock (${reason})`)
  }
  return tcpPlane(reason, deps)
}

async function tcpPlane(reason: string, deps: ControlPlaneDeps): Promise<TcpPlane> {
  const port = await (deps.freePort ?? freePort)()
  return { kind: 'tcp', reason, port, transport: new TcpTransport('127.0.0.1', port) }
}

/** SandboxInfo.transport for a plane. */
export function planeInfo(plane: ControlPlane): ControlPlaneInfo {
  switch (plane.kind) {
    case 'vsock':
      return { kind: 'vsock', cid: plane.cid, port: CONTROL_VSOCK_PORT }
    case 'tcp':
      return { kind: 'tcp', host: '127.0.0.1', port: plane.port }
  }
}
