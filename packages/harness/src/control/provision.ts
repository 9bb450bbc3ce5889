import type { StereosdClient } from './client.js'
import type { MountPayload } from './messages.js'

export interface ProvisionPlan {
  /** Secrets injected before anything else (the token an agent restored with its VM waits for). */
  early: Record<string, string>
  mounts: MountPayload[]
  secrets: Record<string, string>
  sshKey: { user: string; publicKey: string } | undefined
  jcard: string
}

export type ProvisionStep = 'mount' | 'inject_secret' | 'inject_ssh_key' | 'set_config'

/**
 * Provision a ready guest. The order differs from mb's (config, key, secrets, mounts) on
 * purpose: agentd acts on the jcard within 5 s, and restarts every agent when the secret set
 * changes (STEREOS-FACTS §2.2). Sending mounts, then secrets and the key, and the jcard last
 * means agentd's first pass already sees the shared dirs and secrets: no agent starts without
 * its secrets only to be restarted, and no workdir on a share is missing. Secrets go in sorted
 * order so runs are reproducible (mb's is Go map order). Any rejection aborts provisioning.
 */
export async function provision(client: StereosdClient, plan: ProvisionPlan, onStep?: (step: ProvisionStep, detail: string) => void): Promise<void> {
  await injectSecrets(client, plan.early, onStep)
  for (const mount of plan.mounts) {
    await client.mount(mount)
    onStep?.('mount', `${mount.tag} → ${mount.guest_path}`)
  }
  await injectSecrets(client, plan.secrets, onStep)
  if (plan.sshKey) {
    await client.injectSshKey(plan.sshKey.user, plan.sshKey.publicKey)
    onStep?.('inject_ssh_key', plan.sshKey.user)
  }
  await client.setConfig(plan.jcard)
  onStep?.('set_config', `${plan.jcard.length} bytes`)
}

async function injectSecrets(client: StereosdClient, secrets: Record<string, string>, onStep?: (step: ProvisionStep, detail: string) => void): Promise<void> {
  for (const name of Object.keys(secrets).sort()) {
    await client.injectSecret({ name, value: secrets[name]!, mode: 0o600 })
    onStep?.('inject_secret', name)
  }
}
