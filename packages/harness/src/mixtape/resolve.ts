import { isAbsolute } from 'node:path'
import { HarnessError } from '../errors.js'
import type { Arch } from '../config/options.js'
import { fixtureMixtapeDir, isFixtureMixtape } from './fixture.js'
import { readMixtapeDir } from './local.js'
import type { Mixtape } from './mixtape.js'
import { plainProgress } from './oci/progress.js'
import { findCachedMixtape, pullMixtape } from './pull.js'

export { mbBaseDir } from './cache.js'

export interface ResolveContext {
  arch: Arch
  log: (line: string) => void
}

/**
 * Turn a mixtape reference into an unpacked mixtape directory:
 * `fixture` → the locally built fixture for the arch (`fixture-stock`: the same without the
 * `agent` launcher); a path → that directory;
 * `name[:tag]`, a full registry reference or a digest → mb's cache (`<base>/mixtapes/<name>/<tag>`,
 * shared with `mb pull`), pulled first when it is not there (a cached copy is used without asking
 * the registry).
 */
export async function resolveMixtape(ref: string, ctx: ResolveContext): Promise<Mixtape> {
  let mixtape: Mixtape
  if (isFixtureMixtape(ref)) {
    mixtape = readMixtapeDir(ref, await fixtureMixtapeDir(ctx.arch, ctx.log, ref))
  } else if (isAbsolute(ref) || ref.startsWith('.')) {
    mixtape = readMixtapeDir(ref, ref)
  } else {
    mixtape = readMixtapeDir(ref, await cachedOrPulled(ref, ctx))
  }
  if (mixtape.arch && mixtape.arch !== ctx.arch) {
    throw new HarnessError('MIXTAPE_INVALID', `Mixtape ${ref} is built for ${mixtape.arch}, but the sandbox asks for ${ctx.arch}`, {
      fix: `set arch: '${mixtape.arch}', or use a ${ctx.arch} build of the mixtape (\`stereos-harness pull --arch ${ctx.arch} ${ref}\` replaces the cached one)`,
    })
  }
  return mixtape
}

/** The cached dir, else a pull of it for the sandbox's arch (progress as plain log lines). */
async function cachedOrPulled(ref: string, ctx: ResolveContext): Promise<string> {
  const cached = findCachedMixtape(ref, { arch: ctx.arch })
  if (cached) return cached
  ctx.log(`mixtape ${ref} is not in the cache; pulling it`)
  const result = await pullMixtape(ref, { arch: ctx.arch, preferCache: true, progress: plainProgress(ctx.log) })
  return result.dir
}
