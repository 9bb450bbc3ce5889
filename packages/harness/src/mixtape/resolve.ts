import { existsSync } from 'node:fs'
import { homedir } from 'node:os'
import { isAbsolute, join } from 'node:path'
import { HarnessError } from '../errors.js'
import type { Arch } from '../config/options.js'
import { fixtureMixtapeDir } from './fixture.js'
import { readMixtapeDir } from './local.js'
import type { Mixtape } from './mixtape.js'

export interface ResolveContext {
  arch: Arch
  log: (line: string) => void
}

/**
 * Turn a mixtape reference into an unpacked mixtape directory:
 * `fixture` → the locally built fixture for the arch; a path → that directory;
 * `name[:tag]` → mb's cache (`<base>/mixtapes/<name>/<tag>`), shared with `mb pull`.
 */
export async function resolveMixtape(ref: string, ctx: ResolveContext): Promise<Mixtape> {
  let mixtape: Mixtape
  if (ref === 'fixture') {
    mixtape = readMixtapeDir(ref, await fixtureMixtapeDir(ctx.arch, ctx.log))
  } else if (isAbsolute(ref) || ref.startsWith('.')) {
    mixtape = readMixtapeDir(ref, ref)
  } else {
    mixtape = readMixtapeDir(ref, cachedMixtapeDir(ref))
  }
  if (mixtape.arch && mixtape.arch !== ctx.arch) {
    throw new HarnessError('MIXTAPE_INVALID', `Mixtape ${ref} is built for ${mixtape.arch}, but the sandbox asks for ${ctx.arch}`, {
      fix: `set arch: '${mixtape.arch}' or use a ${ctx.arch} build of the mixtape`,
    })
  }
  return mixtape
}

/** mb's base dir rule (STEREOS-FACTS §4.4), without its config.toml indirection. */
export function mbBaseDir(env = process.env): string {
  if (env.MB_CONFIG_DIR) return env.MB_CONFIG_DIR
  if (env.XDG_CONFIG_HOME) return join(env.XDG_CONFIG_HOME, 'mb')
  return join(homedir(), '.config', 'mb')
}

function cachedMixtapeDir(ref: string): string {
  if (ref.includes('/')) {
    throw new HarnessError('MIXTAPE_NOT_FOUND', `Mixtape ${ref} is a registry reference, and this build cannot pull from registries yet`, {
      fix: 'pull it with `mb pull` and pass its short name, or pass the unpacked directory',
    })
  }
  const colon = ref.lastIndexOf(':')
  const name = colon === -1 ? ref : ref.slice(0, colon)
  const tag = colon === -1 ? 'latest' : ref.slice(colon + 1)
  const dir = join(mbBaseDir(), 'mixtapes', name, tag)
  if (!existsSync(dir)) {
    throw new HarnessError('MIXTAPE_NOT_FOUND', `Mixtape ${name}:${tag} is not in the local cache (${dir})`, {
      fix: `run \`mb pull ${name}:${tag}\`, set MB_CONFIG_DIR to the mb base dir that has it, or pass a directory`,
    })
  }
  return dir
}
