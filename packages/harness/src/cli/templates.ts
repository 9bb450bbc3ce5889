import { formatBytes } from '../mixtape/oci/progress.js'
import { printTable } from './table.js'
import { isStale, listTemplates, templatesRoot } from '../template/store.js'

/** `ls --templates`: the VM templates in the harness cache, what each was made from, and its size. */
export function templatesCommand(args: { json: boolean }): number {
  const root = templatesRoot()
  const templates = listTemplates(root)
  if (args.json) {
    const rows = templates.map((t) => ({
      id: t.paths.id,
      dir: t.paths.dir,
      bytes: t.bytes,
      created: t.meta.created,
      agent: t.meta.agent,
      stale: isStale(t),
      ...t.meta.describe,
    }))
    process.stdout.write(`${JSON.stringify(rows, null, 2)}\n`)
    return 0
  }
  if (templates.length === 0) {
    process.stdout.write(`No VM templates in ${root}. The first boot of each kind of VM saves one (Sandbox option template: 'auto').\n`)
    return 0
  }
  const rows = templates.map((t) => {
    const d = t.meta.describe
    return [
      t.paths.id,
      d.mixtape,
      `${d.arch} ${d.accel}`,
      `${d.cpus} cpu ${d.memoryMiB} MiB`,
      t.meta.agent ? 'running' : '',
      formatBytes(t.bytes),
      t.meta.created.slice(0, 19),
      isStale(t) ? 'stale' : '',
    ]
  })
  printTable([['ID', 'MIXTAPE', 'ARCH', 'MACHINE', 'AGENT', 'SIZE', 'CREATED', ''], ...rows])
  return 0
}
