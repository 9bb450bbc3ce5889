import { ensureHarnessShare } from '../share/harness-share.js'
import type { Arch } from '../config/options.js'
import { log } from '../log.js'

/** Assemble the harness share (guest Node, agent, addon) ahead of time, e.g. in CI setup; prints its path. */
export async function shareCommand(args: { arches: Arch[]; json: boolean }): Promise<number> {
  const dirs: Record<string, string> = {}
  for (const arch of args.arches) dirs[arch] = await ensureHarnessShare(arch, { log })
  process.stdout.write(
    args.json
      ? `${JSON.stringify(dirs, null, 2)}\n`
      : `${Object.entries(dirs)
          .map(([a, d]) => `${a}\t${d}`)
          .join('\n')}\n`,
  )
  return 0
}
