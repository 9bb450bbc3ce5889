import { createHash } from 'node:crypto'
import { createReadStream, existsSync, readFileSync, statSync } from 'node:fs'
import { basename, isAbsolute, join } from 'node:path'
import { parse as parseToml } from 'smol-toml'
import type { Arch } from '../config/options.js'
import { HarnessError } from '../errors.js'
import { cacheLayout, listCached } from '../mixtape/cache.js'
import { fixtureMixtapeDir, isFixtureMixtape } from '../mixtape/fixture.js'
import { readMixtapeDir } from '../mixtape/local.js'
import type { Mixtape } from '../mixtape/mixtape.js'
import { plainProgress } from '../mixtape/oci/progress.js'
import { pullMixtape } from '../mixtape/pull.js'

export interface DiskDigest {
  file: string
  format: 'raw' | 'qcow2'
  sha256: string
  bytes: number
}

/**
 * The mixtape's disk image by content: the sha256 its mixtape.toml declares for the file (pull
 * checked it), else (a hand-made mixtape) the file hashed. A capture's disk is a delta over it.
 */
export async function diskDigest(mixtape: Mixtape): Promise<DiskDigest> {
  const file = basename(mixtape.disk.path)
  const bytes = statSync(mixtape.disk.path).size
  const declared = declaredSha256(mixtape.dir, file)
  return { file, format: mixtape.disk.format, sha256: declared ?? (await hashFile(mixtape.disk.path)), bytes }
}

/** The sha256 mixtape.toml declares for `file`, or undefined. Cheap: no hashing. */
export function declaredSha256(dir: string, file: string): string | undefined {
  const path = join(dir, 'mixtape.toml')
  if (!existsSync(path)) return undefined
  let doc: unknown
  try {
    doc = parseToml(readFileSync(path, 'utf8'))
  } catch {
    return undefined
  }
  const seen: unknown[] = [(doc as Record<string, unknown>).artifacts]
  while (seen.length) {
    const node = seen.pop()
    if (!node || typeof node !== 'object') continue
    const t = node as Record<string, unknown>
    if (typeof t.file === 'string' && basename(t.file) === file && typeof t.sha256 === 'string' && /^[0-9a-fA-F]{64}$/.test(t.sha256))
      return t.sha256.toLowerCase()
    seen.push(...Object.values(t))
  }
  return undefined
}

async function hashFile(path: string): Promise<string> {
  const hash = createHash('sha256')
  for await (const chunk of createReadStream(path) as AsyncIterable<Buffer>) hash.update(chunk)
  return hash.digest('hex')
}

/**
 * Whether `mixtape` has the wanted disk for `arch`: by the digest its mixtape.toml declares, else
 * (where `hash`) by hashing the image.
 */
async function holdsDisk(mixtape: Mixtape, wanted: WantedMixtape, arch: Arch, hash: boolean): Promise<boolean> {
  if (basename(mixtape.disk.path) !== wanted.disk.file || (mixtape.arch && mixtape.arch !== arch)) return false
  const sha256 = declaredSha256(mixtape.dir, wanted.disk.file) ?? (hash ? (await diskDigest(mixtape)).sha256 : undefined)
  return sha256 === wanted.disk.sha256
}

export interface WantedMixtape {
  ref: string
  disk: DiskDigest
  /** The registry reference by digest it was pulled from: pulled when no local mixtape matches. */
  pull?: string
}

/**
 * The local mixtape whose disk image is `wanted.disk` by digest: the fixture of that name, the
 * directory the ref names, or any tag in mb's cache. Only declared digests are compared (a
 * cached mixtape is not hashed), except a directory the ref names. None: one line naming the ref to pull.
 */
export async function findMixtapeByDigest(wanted: WantedMixtape, arch: Arch, log: (line: string) => void): Promise<Mixtape> {
  const candidates: (() => Promise<Mixtape | undefined>)[] = []
  if (isFixtureMixtape(wanted.ref)) {
    const ref = wanted.ref
    candidates.push(async () => readMixtapeDir(ref, await fixtureMixtapeDir(arch, log, ref)))
  }
  if (isAbsolute(wanted.ref) && existsSync(wanted.ref)) candidates.push(async () => readMixtapeDir(wanted.ref, wanted.ref))
  for (const entry of listCached(cacheLayout())) candidates.push(async () => readMixtapeDir(`${entry.name}:${entry.tag}`, entry.dir))
  for (const candidate of candidates) {
    let mixtape: Mixtape | undefined
    try {
      mixtape = await candidate()
    } catch {
      continue
    }
    if (mixtape && (await holdsDisk(mixtape, wanted, arch, mixtape.ref === wanted.ref))) return mixtape
  }
  if (wanted.pull) {
    log(`the capture's mixtape ${wanted.ref} is not here: pulling ${wanted.pull}`)
    const pulled = await pullMixtape(wanted.pull, { arch, progress: plainProgress(log) })
    const mixtape = await readMixtapeDir(wanted.pull, pulled.dir)
    if (await holdsDisk(mixtape, wanted, arch, true)) return mixtape
    throw new HarnessError('MIXTAPE_NOT_FOUND', `${wanted.pull} has no disk ${wanted.disk.file} with sha256:${wanted.disk.sha256.slice(0, 12)}…`, {
      fix: 'the capture names a mixtape its registry no longer serves: take its logs and disk with --extract DIR',
    })
  }
  const pull = isFixtureMixtape(wanted.ref) ? `rebuild the fixture (${wanted.ref}) from the same checkout` : `stereos-harness pull --arch ${arch} ${wanted.ref}`
  throw new HarnessError(
    'MIXTAPE_NOT_FOUND',
    `the capture's mixtape ${wanted.ref} (disk ${wanted.disk.file} sha256:${wanted.disk.sha256.slice(0, 12)}…) is not in the local mixtape store`,
    { fix: `${pull}, then run debug again` },
  )
}
