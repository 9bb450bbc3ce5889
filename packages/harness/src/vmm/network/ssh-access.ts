import { sshProxyCommand } from './private-network.js'

interface SshCommon {
  user: 'admin'
  /** OpenSSH private key for `ssh -i`; its public half was injected with inject_ssh_key. */
  keyPath: string
  /**
   * ssh(1) arguments that reach the guest as `user` with the key, destination included: append
   * the remote command (`execa('ssh', [...sandbox.ssh.args, 'uptime'])`).
   */
  args: string[]
}

/** sshd through a TCP forward on the host's 127.0.0.1 (QEMU in the host's network namespace). */
interface SshOverTcp extends SshCommon {
  via: 'tcp'
  host: '127.0.0.1'
  port: number
}

/** sshd through the relay's unix socket in the VM dir (QEMU in a private network namespace). */
interface SshOverUnix extends SshCommon {
  via: 'unix'
  socket: string
  /** The ssh ProxyCommand that connects to `socket` (in `args` already). */
  proxyCommand: string
}

export type SshAccess = SshOverTcp | SshOverUnix

const COMMON_OPTIONS = [
  '-o',
  'IdentitiesOnly=yes',
  '-o',
  'StrictHostKeyChecking=no',
  '-o',
  'UserKnownHostsFile=/dev/null',
  '-o',
  'LogLevel=ERROR',
  '-o',
  'BatchMode=yes',
]

/** How `sandbox.ssh` reaches sshd: the relay's socket when there is one, else the forwarded port; undefined without either. */
export function sshAccess(where: { socket: string | undefined; port: number | undefined }, keyPath: string, vmId: string): SshAccess | undefined {
  const user = 'admin'
  if (where.socket !== undefined) {
    const proxyCommand = sshProxyCommand(where.socket)
    // The host name only labels the connection: ProxyCommand decides where it goes.
    return {
      via: 'unix',
      socket: where.socket,
      proxyCommand,
      user,
      keyPath,
      args: ['-i', keyPath, ...COMMON_OPTIONS, '-o', `ProxyCommand=${proxyCommand}`, `${user}@${vmId}`],
    }
  }
  if (where.port === undefined) return undefined
  return {
    via: 'tcp',
    host: '127.0.0.1',
    port: where.port,
    user,
    keyPath,
    args: ['-i', keyPath, ...COMMON_OPTIONS, '-p', String(where.port), `${user}@127.0.0.1`],
  }
}
