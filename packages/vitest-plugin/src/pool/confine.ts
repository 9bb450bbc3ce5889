import { realpathSync } from 'node:fs'
import { isAbsolute, resolve, sep } from 'node:path'
import { fileURLToPath } from 'node:url'

/**
 * Vitest's worker asks the host to resolve and load modules (`fetch`, `resolve`, and v5's
 * warm-up calls), and Vite reads whatever file an id names: `import('/etc/shadow?raw')` from a
 * guest test would come back with the host file's bytes. The firewall (firewall/allowlist.ts)
 * refuses ids naming host files outside the project view before Vite sees them, and checks each
 * answer with outsideView: a module whose file lies outside the view never reaches the guest.
 */

/** The host file a module id or file field names, without Vite's query and hash; undefined for virtual modules. */
export function moduleFile(value: unknown): string | undefined {
  if (typeof value !== 'string' || value === '') return undefined
  let path = value
  if (path.startsWith('file://')) {
    try {
      path = fileURLToPath(path.split(/[?#]/)[0] as string)
    } catch {
      return undefined
    }
  }
  if (path.startsWith('/@fs/')) path = path.slice('/@fs'.length)
  path = path.split(/[?#]/)[0] as string
  // Virtual modules (`\0…`, `virtual:…`, `/@id/…`, `/@vite/…`) name no host file.
  if (!isAbsolute(path) || path.startsWith('/@')) return undefined
  return path
}

function real(path: string): string {
  try {
    return realpathSync(path)
  } catch {
    return resolve(path)
  }
}

export function insideView(path: string, roots: readonly string[]): boolean {
  const p = real(path)
  return roots.some((root) => p === root || p.startsWith(root.endsWith(sep) ? root : `${root}${sep}`))
}

/**
 * Files a reply hands the guest: the `file` Vite read (and a `tmp` copy) of each module in it.
 * Ids are not checked: they may be URLs. Batches (v5's warm-up maps, arrays) are walked.
 */
function filesIn(result: unknown, depth = 0): string[] {
  if (depth > 4 || typeof result !== 'object' || result === null) return []
  if (Array.isArray(result)) return result.flatMap((r) => filesIn(r, depth + 1))
  const r = result as Record<string, unknown>
  // `externalize` is imported by the guest from its own view; nothing of the host's travels.
  if (typeof r.externalize === 'string') return []
  if ('file' in r || 'tmp' in r || 'code' in r) return ['file', 'tmp'].map((key) => moduleFile(r[key])).filter((f): f is string => f !== undefined)
  return Object.values(r).flatMap((v) => filesIn(v, depth + 1))
}

/** The first file outside the view a reply would hand the guest, if any. */
export function outsideView(result: unknown, roots: readonly string[]): string | undefined {
  return filesIn(result).find((file) => !insideView(file, roots))
}
