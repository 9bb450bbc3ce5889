import { TcpTransport, type Transport } from '../../control/transport.js'
import type { LoadVsock } from '../../control/vsock-module.js'
import { VsockTransport } from '../../control/vsock-transport.js'
import { AGENT_PORT } from '../../wire/messages.js'
import type { HostForward, QemuSpec } from '../argv.js'
import { planeInfo, VHOST_FD_IN_CHILD, type ControlPlane, type ControlPlaneInfo } from '../../control/plane.js'
import { freePort } from '../ports.js'
import { privateForwards, type ForwardScope, type NetnsLaunch } from './private-network.js'

const SSH_PORT = 22
const STEREOSD_PORT = 1024

export interface NetworkRequest {
  plane: ControlPlane
  mode: 'nat' | 'none'
  /** The user's own forwards (network.forwards). */
  forwards: HostForward[]
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
}

const NO_SOCKETS = { ssh: undefined, control: undefined, agent: undefined }

/**
 * vsock planes reach stereosd, the agent and sshd by CID (mode 'none' then means no NIC at all,
 * as in mb); TCP planes reach them through SLIRP forwards on 127.0.0.1.
 */
export async function planNetwork(request: NetworkRequest): Promise<NetworkPlan> {
  const { plane } = request
  const nic = !(plane.kind === 'vsock' && request.mode === 'none')
  if (nic && request.scope?.kind === 'private') {
    if (request.vmDir === undefined) throw new Error('a private network plan needs the VM dir')
    return planPrivate(request, request.scope.userns, request.vmDir)
  }
  const host = { control: plane.transport, controlInfo: planeInfo(plane), sockets: NO_SOCKETS, netns: undefined }
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
        qemu: { network: { mode: 'user', restrict: false, forwards }, vsock },
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
        qemu: { network: { mode: 'user', restrict: request.mode === 'none', forwards } },
        ports: { ssh, control: plane.port, agent },
        agent: agent === undefined ? undefined : local(agent),
        ssh: local(ssh),
        ...host,
      }
    }
  }
}

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
    return { qemu, ports, agent, ssh: f.transports.ssh, control: plane.transport, controlInfo: planeInfo(plane), sockets: f.sockets, netns }
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
  }
}

function tcp(host: number, guest: number): HostForward {
  return { host, guest, proto: 'tcp' }
}

function local(port: number): Transport {
  return new TcpTransport('127.0.0.1', port)
}
