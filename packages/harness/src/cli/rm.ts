import { HarnessError } from '../errors.js'
import { cacheLayout, removeMixtape } from '../mixtape/cache.js'
import { formatBytes } from '../mixtape/oci/progress.js'

/** `rm NAME[:TAG]` (or a full reference): mb's rule, no tag removes every tag of the name. */
export async function rmCommand(args: { ref: string | undefined; json: boolean }): Promise<number> {
  if (!args.ref) throw new HarnessError('INVALID_OPTIONS', 'rm needs a mixtape name', { fix: 'stereos-harness rm coder:latest (or coder for every tag)' })
  const report = await removeMixtape(args.ref, cacheLayout(), () => process.stderr.write('waiting for a pull to finish…\n'))
  if (args.json) {
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`)
    return 0
  }
  for (const entry of report.removed) process.stdout.write(`removed ${entry.name}:${entry.tag} (${entry.dir})\n`)
  if (report.gc.blobs.length) process.stdout.write(`freed ${formatBytes(report.gc.freedBytes)} of blobs no other tag uses\n`)
  return 0
}
