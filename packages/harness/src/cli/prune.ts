import { cacheLayout, pruneCache } from '../mixtape/cache.js'
import { formatBytes } from '../mixtape/oci/progress.js'
import { pruneTemplates, templatesRoot, type TemplatePruneScope } from '../template/store.js'

/**
 * `prune`: blobs no cached tag uses, partial downloads, staging dirs of dead pulls; template
 * saves that died and templates whose mixtape changed, and what `templates` adds (every template,
 * or those unused since a time).
 */
export async function pruneCommand(args: { json: boolean; templates: TemplatePruneScope }): Promise<number> {
  const report = await pruneCache(cacheLayout(), () => process.stderr.write('waiting for running pulls to finish…\n'))
  const templates = await pruneTemplates(templatesRoot(), args.templates)
  if (args.json) {
    process.stdout.write(`${JSON.stringify({ ...report, templates }, null, 2)}\n`)
    return 0
  }
  process.stdout.write(
    `removed ${report.blobs.length} unused blob(s), ${report.partials.length} partial download(s), ${report.tmp.length} staging dir(s): ${formatBytes(report.freedBytes)} freed\n`,
  )
  process.stdout.write(
    `removed ${templates.removed.length} VM template(s) and ${templates.staging.length} unfinished template save(s): ${formatBytes(templates.freedBytes)} freed\n`,
  )
  return 0
}
