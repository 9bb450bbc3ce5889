import { rmSync } from 'node:fs'
import type { StereosdClient } from '../control/client.js'
import type { Transport } from '../control/transport.js'
import { SHARE_DISK_SERIAL } from '../share/share-image.js'
import { waitForTokenlessAgent } from './agent-start.js'
import type { RunningQemu } from './qemu-start.js'
import { sshStartTemplateAgent } from './ssh-bootstrap.js'
import { writeSshKey } from './ssh-key.js'

export interface TemplateAgentRequest {
  /** The guest's sshd and the agent's endpoint, as the lease will use them. */
  ssh: Transport
  agent: Transport
  /** Where the build's throwaway SSH key lives while it is used (removed after). */
  keyPath: string
  timeoutMs: number
  /** The VM's logs, named in a timeout error. */
  logs: { serial: string; qemu: string }
}

/**
 * Start the guest agent in a VM about to be saved as a template, so a restored lease finds it
 * running and only has to hand it the lease's token. The share comes from its ext4 image (a 9p
 * mount would stop the save), the agent runs as root through admin's sudo, and it waits for the
 * token in the secrets dir. The SSH key used for this is made here and dropped: the guest's
 * authorized_keys is emptied before the save and the private half is deleted, so no lease can
 * use it. A failure (no passwordless sudo for admin, no ext4 in the guest) is thrown; the build
 * logs it and saves the template without the agent.
 */
export async function startAgentInTemplate(request: TemplateAgentRequest, client: StereosdClient, qemu: RunningQemu): Promise<void> {
  const deadline = Date.now() + request.timeoutMs
  const key = writeSshKey(request.keyPath, 'stereos-harness-template-build')
  try {
    await client.injectSshKey('admin', key.publicKey)
    const target = { transport: request.ssh, user: 'admin', keyPath: key.privateKeyPath }
    await sshStartTemplateAgent(target, SHARE_DISK_SERIAL, deadline, qemu.died)
  } finally {
    rmSync(key.privateKeyPath, { force: true })
    rmSync(`${key.privateKeyPath}.pub`, { force: true })
  }
  await waitForTokenlessAgent(request.agent, deadline, qemu.died, request.logs)
}
