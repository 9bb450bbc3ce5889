import type { AgentClient } from '../agent-client/client.js'
import { HarnessError } from '../errors.js'
import { HOST_ADDRESS, HOST_NAME } from '../vmm/network/host-ports.js'
import { sshRunAsRoot, type SshTarget } from './ssh-bootstrap.js'

/**
 * The guest's /etc/hosts names HOST_ADDRESS, so tests reach declared host ports as
 * `host.stereos.internal:<port>` (SLIRP's DNS relay serves only the host's resolver). Written as
 * a new file renamed over the old one: on NixOS /etc/hosts is a link into the read-only Nix
 * store, and the rename replaces the link, not its target. Runs as root in the guest.
 */
export const HOSTS_SCRIPT = `set -eu
new=/etc/.stereos-hosts.$$
{ grep -v '[[:space:]]${HOST_NAME.replaceAll('.', '\\.')}$' /etc/hosts 2>/dev/null || true; echo '${HOST_ADDRESS} ${HOST_NAME}'; } > "$new"
chmod 0644 "$new"
mv -f "$new" /etc/hosts
`

export interface HostNameRoute {
  /** The guest agent, used when it runs as root. */
  agent: AgentClient | undefined
  /** admin over SSH with passwordless sudo, otherwise. */
  ssh: SshTarget | undefined
  timeoutMs: number
}

/** Writes the host.stereos.internal line as root, through the agent when it is root, else SSH with sudo. */
export async function nameHostInGuest(route: HostNameRoute): Promise<void> {
  let said: string
  if (route.agent?.info.root) {
    const result = await route.agent.exec('/bin/sh', ['-c', HOSTS_SCRIPT], { user: 'root' })
    if (result.exitCode === 0) return
    said = result.stderr.trim() || `exit ${result.exitCode}`
  } else if (route.ssh) {
    const result = await sshRunAsRoot(route.ssh, HOSTS_SCRIPT, route.timeoutMs)
    if (result.code === 0) return
    said = result.stderr.trim() || `exit ${result.code}`
  } else {
    said = 'the guest has neither a root agent nor SSH (bootstrap none)'
  }
  throw new HarnessError('AGENT', `could not name ${HOST_NAME} (${HOST_ADDRESS}) in the guest's /etc/hosts for network.hostPorts: ${said}`, {
    fix: `use a mixtape whose admin user has passwordless sudo (every stereOS mixtape), or reach the declared ports at ${HOST_ADDRESS}:<port> and drop hostPorts from the options`,
  })
}
