import { TcpTransport, type Transport } from '../control/transport.js'
import type { LoadVsock } from '../control/vsock-module.js'
import { VsockTransport } from '../control/vsock-transport.js'
import { AGENT_PORT } from '../wire/messages.js'
import type { HostForward, QemuSpec } from './argv.js'
import { VHOST_FD_IN_CHILD, type ControlPlane } from './control-plane.js'
import { freePort } from './ports.js'

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
}

/**
 * vsock planes reach stereosd, the agent and sshd by CID (mode 'none' then means no NIC at all,
 * as in mb); TCP planes reach them through SLIRP forwards on 127.0.0.1.
 */
export async function planNetwork(request: NetworkRequest): Promise<NetworkPlan> {
  const { plane } = request
  const alloc = request.freePort ?? freePort
  switch (plane.kind) {
    case 'vsock': {
      const vsock = { cid: plane.cid, vhostfd: VHOST_FD_IN_CHILD }
      const agent = request.agent ? new VsockTransport(plane.cid, AGENT_PORT, request.load) : undefined
      if (request.mode === 'none') {
        return { qemu: { network: { mode: 'none' }, vsock }, ports: { ssh: undefined, control: undefined, agent: undefined }, agent, ssh: new VsockTransport(plane.cid, SSH_PORT, request.load) }
      }
      const ssh = await alloc()
      const forwards = [tcp(ssh, SSH_PORT), ...request.forwards]
      return { qemu: { network: { mode: 'user', restrict: false, forwards }, vsock }, ports: { ssh, control: undefined, agent: undefined }, agent, ssh: local(ssh) }
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
      }
    }
  }
}

function tcp(host: number, guest: number): HostForward {
  return { host, guest, proto: 'tcp' }
}

function local(port: number): Transport {
  return new TcpTransport('127.0.0.1', port)
}
