import { existsSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Binding } from './binding.js'

/** The package root: this file is src/load.ts (tests) or dist/load.js (built). */
export const packageRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..')

/** `<platform>-<arch>` as the prebuilds/ directory names it, e.g. linux-x64, linux-arm64. */
export function platformTag(platform: string = process.platform, arch: string = process.arch): string {
  return `${platform}-${arch}`
}

/** Where the loader looks for the addon, in order. */
export function addonCandidates(root: string = packageRoot, env: NodeJS.ProcessEnv = process.env): string[] {
  const list: string[] = []
  if (env.STEREOS_VSOCK_ADDON) list.push(resolve(env.STEREOS_VSOCK_ADDON))
  list.push(join(root, 'prebuilds', platformTag(), 'vsock.node'))
  list.push(join(root, 'build', 'Release', 'vsock.node'))
  return list
}

/** The error the loader throws when no candidate exists: names the platform and the fix. */
export function missingAddonMessage(candidates: string[], platform = process.platform, arch = process.arch): string {
  const tag = platformTag(platform, arch)
  const how =
    platform !== 'linux'
      ? `AF_VSOCK and vhost-vsock are Linux-only: there is no build of @stereos/vsock for ${platform}.`
      : arch === 'x64' || arch === 'arm64'
        ? `Build it with \`npm run build -w native\` (needs g++${arch === process.arch ? '' : ` for ${arch}: ${arch === 'arm64' ? 'g++-aarch64-linux-gnu' : 'g++-x86-64-linux-gnu'}`} and Node's headers).`
        : `No prebuild is made for ${arch}; build it on that machine with \`npm run build -w native\` (g++ and Node's headers).`
  return `@stereos/vsock: no native addon for ${tag}. Looked for:\n${candidates.map((c) => `  ${c}`).join('\n')}\n${how}`
}

let cached: Binding | undefined

/**
 * The native addon for this process's platform and arch: $STEREOS_VSOCK_ADDON, then the prebuild
 * (prebuilds/<platform>-<arch>/vsock.node, made by `npm run build -w native`), then a local
 * build (build/Release/vsock.node). Nothing is downloaded.
 */
export function loadBinding(): Binding {
  if (cached) return cached
  const candidates = addonCandidates()
  const file = candidates.find((c) => existsSync(c))
  if (!file) throw new Error(missingAddonMessage(candidates))
  const require = createRequire(import.meta.url)
  try {
    cached = require(file) as Binding
  } catch (err) {
    const e = err as Error
    throw new Error(`@stereos/vsock: loading ${file} failed: ${e.message}`, { cause: err })
  }
  return cached
}
