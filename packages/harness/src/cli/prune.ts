import { cacheLayout, pruneCache } from '../mixtape/cache.js'
import { formatBytes } from '../mixtape/oci/progress.js'

/** `prune`: blobs no cached tag uses, partial downloads, staging dirs of dead pulls. */
export async function pruneCommand(args: { json: boolean }): Promise<number> {
  const report = await pruneCache(cacheLayout(), () => process.stderr.write('waiting for running pulls to finish…\n'))
  if (args.json) {
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`)
    return 0
  }
  process.stdout.write(
    `removed ${report.blobs.length} unused blob(s), ${report.partials.length} partial download(s), ${report.tmp.length} staging dir(s): ${formatBytes(report.freedBytes)} freed\n`,
  )
  return 0
}
