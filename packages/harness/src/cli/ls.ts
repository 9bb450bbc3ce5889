import { cacheLayout, listCached } from '../mixtape/cache.js'
import { formatBytes } from '../mixtape/oci/progress.js'
import { printTable } from './table.js'

/** `ls`: every tag dir in mb's cache, ours with their digest and source, mb's marked as such. */
export function lsCommand(args: { json: boolean }): number {
  const layout = cacheLayout()
  const entries = listCached(layout)
  if (args.json) {
    const rows = entries.map(({ name, tag, dir, size, record }) => ({
      name,
      tag,
      dir,
      size,
      digest: record?.digest,
      format: record?.format,
      platform: record?.platform,
      reference: record?.reference,
      pulledBy: record ? 'stereos-harness' : 'mb',
    }))
    process.stdout.write(`${JSON.stringify(rows, null, 2)}\n`)
    return 0
  }
  if (entries.length === 0) {
    process.stdout.write(`No mixtapes in ${layout.mixtapes}. Pull one with: stereos-harness pull <name>\n`)
    return 0
  }
  const rows = entries.map((e) => [
    e.name,
    e.tag,
    formatBytes(e.size),
    e.record ? e.record.digest.slice(7, 19) : '-',
    e.record ? `${e.record.platform ?? e.record.for} ${e.record.format}` : '-',
    e.record?.reference ?? '(mb pull)',
  ])
  printTable([['NAME', 'TAG', 'SIZE', 'DIGEST', 'PLATFORM', 'SOURCE'], ...rows])
  return 0
}
