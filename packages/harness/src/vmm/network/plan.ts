import { TcpTransport, type Transport } from '../../control/transport.js'
import type { LoadVsock } from '../../control/vsock-module.js'
import { VsockTransport } from '../../control/vsock-transport.js'
import { AGENT_PORT } from '../../wire/messages.js'
import type { HostForward, QemuSpec } from '../argv.js'
import { planeInfo, VHOST_FD_IN_CHILD, type ControlPlane, type ControlPlaneInfo } from '../../control/plane.js'
import { freePort } from '../ports.js'
import { planHostPorts, type HostPortSpec } from './host-ports.js'
import { privateForwards, type ForwardScope, type NetnsLaunch } from './private-network.js'

const SSH_PORT = 22
const STEREOSD_PORT = 1024

export interface NetworkRequest {
  plane: ControlPlane
  mode: 'nat' | 'none'
  /** The user's own forwards (network.forwards). */
  forwards: HostForward[]
  /** Host ports on 127.0.0.1 the guest may reach (network.hostPorts; mode 'nat'); default none. */
  hostPorts?: readonly number[]
  /** Whether the guest agent needs a path from the host. */
  agent: boolean
  load?: LoadVsock
  freePort?: () => Promise<number>
  /**
   * Who may reach the forwards (vmm/private-network.ts); default: TCP forwards on the host's
   * 127.0.0.1. `private` puts them behind unix sockets in `vmDir`.
   */
  scope?: ForwardScope
  vmDir?: string
}

/** Every way the host reaches this guest, decided before QEMU starts. */
export interface NetworkPlan {
  /** QEMU's NIC and vsock device. */
  qemu: Pick<QemuSpec, 'network' | 'vsock'>
  /** Host ports forwarded into the guest (127.0.0.1 only), as SandboxInfo.ports reports them. */
  ports: { ssh: number | undefined; control: number | undefined; agent: number | undefined }
  /** The guest agent's endpoint; undefined when no agent was asked for. */
  agent: Transport | undefined
  /** The guest's sshd: the forwarded port when there is one (what `sandbox.ssh` reports), else vsock port 22. */
  ssh: Transport
  /** stereosd's endpoint, and how SandboxInfo.transport reports it. */
  control: Transport
  controlInfo: ControlPlaneInfo
  /** Unix sockets in the VM dir that reach the guest (private scope), as SandboxInfo.sockets reports them. */
  sockets: { ssh: string | undefined; control: string | undefined; agent: string | undefined }
  /** QEMU's private network namespace, when it gets one. */
  netns: NetnsLaunch | undefined
  /** The sockets the harness listens on for the guest's connections to declared host ports. */
  hostPorts: HostPortSpec[]
}

const NO_SOCKETS = { ssh: undefined, control: undefined, agent: undefined }

/**
 * vsock planes reach stereosd, the agent and sshd by CID (mode 'none' then means no NIC at all,
 * as in mb); TCP planes reach them through SLIRP forwards on 127.0.0.1. The guest itself reaches
 * the host only at its declared hostPorts (host-ports.ts).
 */
export async function planNetwork(request: NetworkRequest): Promise<NetworkPlan> {
  const plan = await planPaths(request)
  const ports = request.mode === 'nat' ? (request.hostPorts ?? []) : []
  if (!ports.length || plan.qemu.network.mode !== 'user') return plan
  if (request.vmDir === undefined) throw new Error('network.hostPorts needs the VM dir')
  const declared = planHostPorts(ports, request.vmDir)
  return { ...plan, qemu: { ...plan.qemu, network: { ...plan.qemu.network, guestForwards: declared.qemu } }, hostPorts: declared.listen }
}

async function planPaths(request: NetworkRequest): Promise<NetworkPlan> {
  const { plane } = request
  const nic = !(plane.kind === 'vsock' && request.mode === 'none')
  if (nic && request.scope?.kind === 'private') {
    if (request.vmDir === undefined) throw new Error('a private network plan needs the VM dir')
    return planPrivate(request, request.scope.userns, request.vmDir)
  }
  const host = { control: plane.transport, controlInfo: planeInfo(plane), sockets: NO_SOCKETS, netns: undefined, hostPorts: [] }
  const alloc = request.freePort ?? freePort
  switch (plane.kind) {
    case 'vsock': {
      const vsock = { cid: plane.cid, vhostfd: VHOST_FD_IN_CHILD }
      const agent = request.agent ? new VsockTransport(plane.cid, AGENT_PORT, request.load) : undefined
      if (request.mode === 'none') {
        return {
          qemu: { network: { mode: 'none' }, vsock },
          ports: { ssh: undefined, control: undefined, agent: undefined },
          agent,
          ssh: new VsockTransport(plane.cid, SSH_PORT, request.load),
          ...host,
        }
      }
      const ssh = await alloc()
      const forwards = [tcp(ssh, SSH_PORT), ...request.forwards]
      return {
        qemu: { network: { mode: 'user', restrict: HOST_LOOPBACK_CLOSED, forwards }, vsock },
        ports: { ssh, control: undefined, agent: undefined },
        agent,
        ssh: local(ssh),
        ...host,
      }
    }
    case 'tcp': {
      const ssh = await alloc()
      const agent = request.agent ? await alloc() : undefined
      const forwards = [tcp(ssh, SSH_PORT), tcp(plane.port, STEREOSD_PORT), ...request.forwards, ...(agent === undefined ? [] : [tcp(agent, AGENT_PORT)])]
      return {
        qemu: { network: { mode: 'user', restrict: HOST_LOOPBACK_CLOSED, forwards } },
        ports: { ssh, control: plane.port, agent },
        agent: agent === undefined ? undefined : local(agent),
        ssh: local(ssh),
        ...host,
      }
    }
  }
}

/**
 * QEMU in the host's network namespace maps every SLIRP address but DNS (10.0.2.2, 10.0.2.100, …)
 * to the host's 127.0.0.1: other VMs' control planes and every local service. QEMU has no switch
 * for that (slirp4netns's --disable-host-loopback is libslirp's, not exposed), so such a QEMU
 * always runs restrict=on, in mode 'nat' too: the guest then reaches the host only at its
 * declared hostPorts (guestfwd is checked first) and has no outbound network.
 */
const HOST_LOOPBACK_CLOSED = true

/**
 * QEMU in its own network namespace: its forwards listen on that namespace's 127.0.0.1 (fixed
 * ports, nobody else there) and the relay exposes them as unix sockets in the VM dir. vsock
 * planes keep stereosd and the agent on vsock; only sshd (and the user's forwards) go through
 * the relay then.
 */
function planPrivate(request: NetworkRequest, userns: boolean, vmDir: string): NetworkPlan {
  const { plane } = request
  const tcp = plane.kind === 'tcp'
  const f = privateForwards({ vmDir, control: tcp, agent: tcp && request.agent, agentPort: AGENT_PORT, forwards: request.forwards })
  const netns: NetnsLaunch = { userns, relay: f.relay, hostForwards: f.host, egress: request.mode === 'nat' }
  const ports = { ssh: undefined, control: undefined, agent: undefined }
  if (plane.kind === 'vsock') {
    const agent = request.agent ? new VsockTransport(plane.cid, AGENT_PORT, request.load) : undefined
    const qemu = { network: { mode: 'user' as const, restrict: false, forwards: f.qemu }, vsock: { cid: plane.cid, vhostfd: VHOST_FD_IN_CHILD } }
    return { qemu, ports, agent, ssh: f.transports.ssh, control: plane.transport, controlInfo: planeInfo(plane), sockets: f.sockets, netns, hostPorts: [] }
  }
  const control = f.transports.control ?? plane.transport
  return {
    qemu: { network: { mode: 'user', restrict: request.mode === 'none', forwards: f.qemu } },
    ports,
    agent: f.transports.agent,
    ssh: f.transports.ssh,
    control,
    controlInfo: { kind: 'unix', path: f.sockets.control ?? '', port: STEREOSD_PORT },
    sockets: f.sockets,
    netns,
    hostPorts: [],
  }
}

function tcp(host: number, guest: number): HostForward {
  return { host, guest, proto: 'tcp' }
}

function local(port: number): Transport {
  return new TcpTransport('127.0.0.1', port)
}
