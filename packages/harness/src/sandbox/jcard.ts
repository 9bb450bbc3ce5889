import { stringify } from 'smol-toml'
import type { BootPlan } from '../config/plan.js'

/**
 * The jcard.toml a sandbox sends with set_config when the user gives none: what mb would write
 * for the same sandbox, minus secret values. mb puts expanded secret values into the 0644
 * /etc/stereos/jcard.toml (STEREOS-FACTS §3.6); we send secrets only through inject_secret.
 */
export function defaultJcard(name: string, options: BootPlan): string {
  const doc: Record<string, unknown> = {
    mixtape: options.mixtape,
    name,
    resources: {
      cpus: options.resources.cpus,
      memory: `${options.memoryMiB}MiB`,
      disk: `${Math.ceil(options.resources.disk / 1024 ** 2)}MiB`,
    },
    network: {
      mode: options.network.mode,
      forwards: options.network.forwards.map((f) => ({ host: f.host, guest: f.guest, proto: f.proto })),
    },
    shared: options.shared.map((s) => ({ host: s.host, guest: s.guest, readonly: s.readonly })),
  }
  return stringify(doc)
}
