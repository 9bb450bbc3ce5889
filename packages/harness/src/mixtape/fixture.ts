import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { HarnessError } from '../errors.js'
import type { Arch } from '../config/options.js'

/**
 * `mixtape: 'fixture'` is the repo's stereOS test double (fixtures/guest); `'fixture-stock'` is
 * the same guest without the harness's `agent` launcher (a stock stereOS mixtape, reached by SSH
 * only); `'fixture-nixos'` is laid out like a stereOS NixOS system (no FHS loader, programs in
 * /run/current-system/sw/bin, sudo in /run/wrappers/bin). It lives beside the packages, not inside them, so we find its builder by walking up
 * from the working directory and from this module, or from $STEREOS_FIXTURE_BUILDER.
 */
export function findFixtureBuilder(): string | undefined {
  const explicit = process.env.STEREOS_FIXTURE_BUILDER
  if (explicit) return existsSync(explicit) ? explicit : undefined
  for (const start of [process.cwd(), dirname(fileURLToPath(import.meta.url))]) {
    for (let dir = start; ; dir = dirname(dir)) {
      const candidate = join(dir, 'fixtures', 'guest', 'build.mjs')
      if (existsSync(candidate)) return candidate
      if (dirname(dir) === dir) break
    }
  }
  return undefined
}

/** The fixture mixtape references and the builder variant each one names. */
export const FIXTURE_MIXTAPES = { fixture: 'fixture', 'fixture-stock': 'stock', 'fixture-nixos': 'nixos' } as const
export type FixtureMixtape = keyof typeof FIXTURE_MIXTAPES

export function isFixtureMixtape(ref: string): ref is FixtureMixtape {
  return Object.hasOwn(FIXTURE_MIXTAPES, ref)
}

interface FixtureBuilder {
  buildFixture(options: { arch: Arch; variant?: 'fixture' | 'stock' | 'nixos'; log?: (line: string) => void }): Promise<{ dir: string; cached: boolean }>
}

/** Directory of the fixture mixtape `ref` for `arch`, building it first when missing or stale. */
export async function fixtureMixtapeDir(arch: Arch, log: (line: string) => void, ref: FixtureMixtape = 'fixture'): Promise<string> {
  const builder = findFixtureBuilder()
  if (!builder) {
    throw new HarnessError(
      'MIXTAPE_NOT_FOUND',
      `mixtape "${ref}" needs the stereos-harness repository (fixtures/guest/build.mjs) and none was found above the working directory`,
      {
        fix: 'run from a checkout of stereos-harness, set STEREOS_FIXTURE_BUILDER to its fixtures/guest/build.mjs, or name a real mixtape',
      },
    )
  }
  const mod = (await import(pathToFileURL(builder).href)) as FixtureBuilder
  // A build is worth streaming; a cache hit is not worth a line on every boot.
  const { dir } = await mod.buildFixture({ arch, variant: FIXTURE_MIXTAPES[ref], log: (line) => /: up to date \(/.test(line) || log(line) })
  return dir
}
