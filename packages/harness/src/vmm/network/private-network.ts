import { join } from 'node:path'
import { UnixTransport } from '../../control/unix-transport.js'
import type { Transport } from '../../control/transport.js'
import { probeNetns, type NetnsSupport, type RelayForward } from './netns.js'
import type { HostForward } from '../argv.js'
import type { HostForwardSpec } from './host-forwards.js'
import { entryScript } from '../../host/entry-script.js'

/**
 * Who can reach QEMU's SLIRP forwards. `private`: QEMU runs in its own network namespace and
 * stereosd, the agent and sshd are unix sockets in the VM dir (this user and root only).
 * `host`: today's TCP forwards on the host's 127.0.0.1, which every local user can reach.
 */
export type ForwardScope = { kind: 'private'; userns: boolean } | { kind: 'host'; reason: string }

export interface ScopeRequest {
  /** QEMU has a NIC (network 'nat', or a TCP control plane). */
  nic: boolean
  /** The user's forwards include UDP ones, which the unix-socket relay cannot carry. */
  udpForwards: boolean
}

export interface ScopeDeps {
  probe?: () => Promise<NetnsSupport>
  log?: (line: string) => void
  /** Where the fallback was already said; default: once per process. */
  noted?: { done: boolean }
}

const processNote = { done: false }

export async function chooseForwardScope(request: ScopeRequest, deps: ScopeDeps = {}): Promise<ForwardScope> {
  if (!request.nic) return { kind: 'host', reason: 'QEMU has no network device' }
  let reason: string
  let fix = ''
  if (request.udpForwards) {
    reason = 'network.forwards has UDP forwards, which only a host-namespace QEMU can carry'
    fix = 'use TCP forwards'
  } else {
    const support = await (deps.probe ?? probeNetns)()
    if (support.ok) return { kind: 'private', userns: support.userns }
    reason = support.reason
    fix = support.fix
  }
  const noted = deps.noted ?? processNote
  if (!noted.done) {
    noted.done = true
    deps.log?.(
      `QEMU's control-plane, agent and SSH forwards are TCP ports on 127.0.0.1 that EVERY local user can connect to (stereosd has no authentication), ` +
        `and the guest has no outbound network (in the host's namespace SLIRP would let it reach every service on 127.0.0.1; it reaches only network.hostPorts): ${reason}. Fix: ${fix}`,
    )
  }
  return { kind: 'host', reason }
}

/** Ports QEMU forwards from inside its namespace: private there, so fixed; >= 1024, so QEMU needs no capability. */
export const NAMESPACE_PORTS = { ssh: 10022, control: 11024, agent: 11025, firstUser: 12000 } as const

export interface PrivateForwardsRequest {
  vmDir: string
  /** Forward stereosd's port (TCP control plane). */
  control: boolean
  /** Forward the agent's port. */
  agent: boolean
  agentPort: number
  /** The user's TCP forwards (network.forwards). */
  forwards: HostForward[]
}

export interface PrivateForwards {
  /** QEMU's hostfwd rules, on the namespace's 127.0.0.1. */
  qemu: HostForward[]
  /** What the relay exposes as unix sockets. */
  relay: RelayForward[]
  /** The user's forwards, listened on by the harness on the host's 127.0.0.1. */
  host: HostForwardSpec[]
  sockets: { control: string | undefined; agent: string | undefined; ssh: string }
  transports: { control: Transport | undefined; agent: Transport | undefined; ssh: Transport }
}

/** The forwards of a VM whose QEMU runs in a private network namespace. */
export function privateForwards(request: PrivateForwardsRequest): PrivateForwards {
  const qemu: HostForward[] = []
  const relay: RelayForward[] = []
  const expose = (name: string, port: number, guest: number): string => {
    const path = join(request.vmDir, name)
    qemu.push({ host: port, guest, proto: 'tcp' })
    relay.push({ path, port })
    return path
  }
  const ssh = expose('ssh.sock', NAMESPACE_PORTS.ssh, 22)
  const control = request.control ? expose('control.sock', NAMESPACE_PORTS.control, 1024) : undefined
  const agent = request.agent ? expose('agent.sock', NAMESPACE_PORTS.agent, request.agentPort) : undefined
  const host = request.forwards.map((f, i) => ({
    port: f.host,
    socket: expose(`forward-${i}.sock`, NAMESPACE_PORTS.firstUser + i, f.guest),
    option: `options.network.forwards.${i}`,
  }))
  return {
    qemu,
    relay,
    host,
    sockets: { control, agent, ssh },
    transports: {
      control: control === undefined ? undefined : new UnixTransport(control, 1024),
      agent: agent === undefined ? undefined : new UnixTransport(agent, request.agentPort),
      ssh: new UnixTransport(ssh, 22),
    },
  }
}

/** What starting QEMU in its private namespace needs beyond its argv (see netns.ts, host-forwards.ts). */
export interface NetnsLaunch {
  userns: boolean
  relay: RelayForward[]
  hostForwards: HostForwardSpec[]
  /** Give the namespace outbound network (slirp4netns): network.mode 'nat'. */
  egress: boolean
}

/** ssh(1) through the relay's socket: the ProxyCommand that connects stdio to it (quoted for the shell ssh runs it with). */
export function sshProxyCommand(socket: string): string {
  return [process.execPath, entryScript('vmm/network/unix-stdio'), socket].map(shellQuote).join(' ')
}

function shellQuote(word: string): string {
  return `'${word.replaceAll("'", "'\\''")}'`
}
