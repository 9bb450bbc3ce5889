import { homedir } from 'node:os'
import { join } from 'node:path'

/** The harness's own cache (harness share, guest Node, VM templates); mb's mixtape cache is separate. */
export function harnessCacheDir(env = process.env): string {
  if (env.STEREOS_HARNESS_CACHE) return env.STEREOS_HARNESS_CACHE
  return join(env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'stereos-harness')
}
