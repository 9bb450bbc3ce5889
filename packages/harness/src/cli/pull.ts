import type { Arch } from '../config/options.js'
import { HarnessError } from '../errors.js'
import { progressFor } from '../mixtape/oci/progress.js'
import { pullMixtape } from '../mixtape/pull.js'

export interface PullArgs {
  ref: string | undefined
  arch: Arch | undefined
  json: boolean
  force: boolean
}

/** `pull REF`: progress on stderr (a bar on a terminal), the result on stdout. */
export async function pullCommand(args: PullArgs): Promise<number> {
  if (!args.ref)
    throw new HarnessError('INVALID_OPTIONS', 'pull needs a reference', { fix: 'stereos-harness pull coder:latest (or a full registry reference)' })
  const result = await pullMixtape(args.ref, { arch: args.arch, force: args.force, progress: progressFor(process.stderr) })
  if (args.json) {
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`)
  } else {
    process.stdout.write(`${result.upToDate ? 'up to date' : 'pulled'}: ${result.reference} ${result.digest} → ${result.dir}\n`)
  }
  return 0
}
