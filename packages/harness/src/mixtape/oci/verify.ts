import { basename } from 'node:path'
import { parse as parseToml } from 'smol-toml'
import { HarnessError } from '../../errors.js'

export interface FileSum {
  sha256: string
  size: number
}

export interface VerifyResult {
  /** Files whose sha256 and size matched an `[artifacts.*]` entry. */
  verified: string[]
  /** Installed files that mixtape.toml does not list (nothing to check them against but the blob digest). */
  unlisted: string[]
}

interface Artifact {
  table: string
  file: string
  sha256: string
  size: number
  compressed?: { file: string; sha256: string; size: number }
}

/** mixtape.toml as a document; text that is not TOML is an image published wrongly. */
function parseMixtapeToml(text: string): Record<string, unknown> {
  try {
    return parseToml(text)
  } catch (cause) {
    throw new HarnessError('MIXTAPE_INVALID', `the image's mixtape.toml is not valid TOML: ${(cause as Error).message}`, {
      fix: 'the image is published wrongly: republish it, or pull another tag',
      cause,
    })
  }
}

/**
 * Check the installed files against mixtape.toml (STEREOS-FACTS §4.5): every `[artifacts.*]`
 * entry whose `file` was installed must match in sha256 and size, and a `compressed_file` that was
 * the blob of a zstd layer must match that blob's digest and size. Entries for files this pull did
 * not install (the other disk format) are skipped. A mismatch is MIXTAPE_INVALID.
 */
export function verifyMixtapeToml(text: string, files: Map<string, FileSum>, compressedBlobs: Map<string, FileSum>): VerifyResult {
  const doc = parseMixtapeToml(text)
  const artifacts = collect(doc.artifacts, 'artifacts')
  const verified: string[] = []
  const problems: string[] = []
  for (const artifact of artifacts) {
    const got = files.get(artifact.file)
    if (got) {
      if (got.sha256 !== artifact.sha256.toLowerCase() || got.size !== artifact.size) {
        problems.push(
          `${artifact.file}: mixtape.toml [${artifact.table}] says sha256 ${artifact.sha256}, ${artifact.size} bytes; the pulled file has sha256 ${got.sha256}, ${got.size} bytes`,
        )
      } else {
        verified.push(artifact.file)
      }
    }
    const blob = artifact.compressed && compressedBlobs.get(artifact.compressed.file)
    if (artifact.compressed && blob && (blob.sha256 !== artifact.compressed.sha256.toLowerCase() || blob.size !== artifact.compressed.size)) {
      problems.push(
        `${artifact.compressed.file}: mixtape.toml [${artifact.table}] says compressed sha256 ${artifact.compressed.sha256}, ${artifact.compressed.size} bytes; the blob has sha256 ${blob.sha256}, ${blob.size} bytes`,
      )
    }
  }
  if (problems.length) {
    throw new HarnessError('MIXTAPE_INVALID', `the pulled files do not match the image's mixtape.toml checksums:\n  ${problems.join('\n  ')}`, {
      fix: 'the image is published inconsistently (its layers are not the files its mixtape.toml describes); nothing was cached. Pull another tag or report it to the publisher',
    })
  }
  const listed = new Set(artifacts.map((a) => a.file))
  return { verified, unlisted: [...files.keys()].filter((file) => file !== 'mixtape.toml' && !listed.has(file)) }
}

/**
 * Decompressed sizes by file name, from mixtape.toml's `[artifacts.*]` (file + size): the bound
 * for unpacking zstd layers. Read before the disk layer is unpacked.
 */
export function declaredSizes(text: string): Map<string, number> {
  const doc = parseMixtapeToml(text)
  const sizes = new Map<string, number>()
  for (const artifact of collect(doc.artifacts, 'artifacts')) {
    if (Number.isSafeInteger(artifact.size) && artifact.size >= 0) sizes.set(artifact.file, artifact.size)
  }
  return sizes
}

/** Every table under `artifacts` (at any depth) that has file + sha256 + size. */
function collect(node: unknown, table: string): Artifact[] {
  if (!node || typeof node !== 'object' || Array.isArray(node)) return []
  const t = node as Record<string, unknown>
  const out: Artifact[] = []
  if (typeof t.file === 'string' && typeof t.sha256 === 'string' && (typeof t.size === 'number' || typeof t.size === 'bigint')) {
    const artifact: Artifact = { table, file: basename(t.file), sha256: t.sha256, size: Number(t.size) }
    if (typeof t.compressed_file === 'string' && typeof t.compressed_sha256 === 'string' && t.compressed_size !== undefined) {
      artifact.compressed = { file: basename(t.compressed_file), sha256: t.compressed_sha256, size: Number(t.compressed_size) }
    }
    out.push(artifact)
  }
  for (const [key, value] of Object.entries(t)) out.push(...collect(value, `${table}.${key}`))
  return out
}
