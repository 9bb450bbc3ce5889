import { HarnessError } from '../errors.js'
import { TcpTransport, type Transport } from '../control/transport.js'
import { loadVsock, type LoadVsock, type VsockModule } from '../control/vsock-module.js'
import { CONTROL_VSOCK_PORT, VsockTransport } from '../control/vsock-transport.js'
import type { QemuSpec } from './argv.js'

export type ControlPlaneMode = 'auto' | 'vsock' | 'tcp'

/** The fd number QEMU sees the reservation as: the first slot after stdin/stdout/stderr. */
export const VHOST_FD_IN_CHILD = 3

export interface VsockPlane {
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

export interface TcpPlane {
  kind: 'tcp'
  /** Why vsock is not used (shown once per process in auto mode). */
  reason: string
}

export type ControlPlane = VsockPlane | TcpPlane

export interface ControlPlaneDeps {
  load?: LoadVsock
  log?: (line: string) => void
  /** Where "vsock not used" was already said; default: once per process. */
  noted?: { done: boolean }
}

const processNote = { done: false }

const VSOCK_FIX =
  'load the module (sudo modprobe vhost_vsock), give this user read/write on /dev/vhost-vsock (udev rule KERNEL=="vhost-vsock", GROUP="kvm", MODE="0660"), ' +
  "then check with `stereos-harness doctor`; or use controlPlane: 'auto' or 'tcp'"

/** Whether vsock can be used here, without reserving anything (doctor asks this too). */
export async function vsockAvailability(load: LoadVsock = loadVsock): Promise<{ ok: true; vsock: VsockModule; reason: string } | { ok: false; reason: string }> {
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
  if (mode === 'tcp') return { kind: 'tcp', reason: "controlPlane: 'tcp' requested" }
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
    deps.log?.(`control plane: TCP through a 127.0.0.1 port forward, not vsock (${reason})`)
  }
  return { kind: 'tcp', reason }
}

/**
 * What the control plane decides in QEMU's argv: vsock adds the vhost-vsock device on fd 3 and
 * drops the :1024 forward; `sshPort` undefined means network.mode 'none' (vsock only).
 */
export function planeQemuSpec(plane: ControlPlane, sshPort: number | undefined, controlPort: number | undefined, forwards: { host: number; guest: number; proto: 'tcp' | 'udp' }[]): Pick<QemuSpec, 'network' | 'vsock'> {
  const network: QemuSpec['network'] =
    sshPort === undefined ? { mode: 'none' } : { mode: 'nat', sshPort, ...(plane.kind === 'tcp' && controlPort !== undefined ? { controlPort } : {}), forwards }
  return plane.kind === 'vsock' ? { network, vsock: { cid: plane.cid, vhostfd: VHOST_FD_IN_CHILD } } : { network }
}

/** SandboxInfo.transport for a plane. */
export function planeInfo(plane: ControlPlane, controlPort: number | undefined): { kind: 'tcp'; host: string; port: number } | { kind: 'vsock'; cid: number; port: number } {
  if (plane.kind === 'vsock') return { kind: 'vsock', cid: plane.cid, port: CONTROL_VSOCK_PORT }
  if (controlPort === undefined) throw new Error('TCP control plane without a control port')
  return { kind: 'tcp', host: '127.0.0.1', port: controlPort }
}

/** How the host connects to stereosd for this plane. */
export function planeTransport(plane: ControlPlane, controlPort: number | undefined): Transport {
  if (plane.kind === 'vsock') return plane.transport
  const where = planeInfo(plane, controlPort)
  return new TcpTransport('127.0.0.1', where.port)
}
