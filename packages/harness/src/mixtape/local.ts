import { existsSync, readFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { parse as parseToml } from 'smol-toml'
import { HarnessError } from '../errors.js'
import type { Arch } from '../config/options.js'
import type { Mixtape } from './mixtape.js'

/** mb's ResolveMixtapePath order (STEREOS-FACTS §4.4). */
const DISK_FILES = [
  ['stereos.img', 'raw'],
  ['stereos.qcow2', 'qcow2'],
  ['nixos.img', 'raw'],
  ['nixos.qcow2', 'qcow2'],
] as const

const ARCH_BY_SYSTEM: Record<string, Arch> = { 'x86_64-linux': 'x86_64', 'aarch64-linux': 'aarch64' }

/** Read an unpacked mixtape directory. Cheap: no hashing (pull verifies checksums). */
export function readMixtapeDir(ref: string, dirInput: string): Mixtape {
  const dir = resolve(dirInput)
  if (!existsSync(dir)) {
    throw new HarnessError('MIXTAPE_NOT_FOUND', `Mixtape directory ${dir} does not exist`, {
      fix: 'pass a directory that holds an unpacked mixtape (stereos.img or stereos.qcow2, bzImage, initrd, cmdline)',
    })
  }
  const found = DISK_FILES.find(([file]) => existsSync(join(dir, file)))
  if (!found) {
    throw new HarnessError('MIXTAPE_INVALID', `Mixtape directory ${dir} holds no disk image (looked for ${DISK_FILES.map(([f]) => f).join(', ')})`, {
      fix: 'pull the mixtape again (`mb pull` or `stereos-harness pull`), or point at the directory that has the image',
    })
  }
  const [file, format] = found
  const kernelFiles = { kernel: join(dir, 'bzImage'), initrd: join(dir, 'initrd'), cmdline: join(dir, 'cmdline') }
  const direct = Object.values(kernelFiles).every((path) => existsSync(path))
  const manifest = readManifest(dir)
  return {
    ref,
    dir,
    arch: manifest.arch,
    version: manifest.version,
    disk: { path: join(dir, file), format },
    kernel: direct ? kernelFiles : undefined,
  }
}

function readManifest(dir: string): { arch: Arch | undefined; version: string | undefined } {
  const path = join(dir, 'mixtape.toml')
  if (!existsSync(path)) return { arch: undefined, version: undefined }
  let doc: Record<string, unknown>
  try {
    doc = parseToml(readFileSync(path, 'utf8'))
  } catch (cause) {
    throw new HarnessError('MIXTAPE_INVALID', `${path} is not valid TOML: ${(cause as Error).message}`, {
      fix: 'pull or rebuild the mixtape; the manifest is damaged',
      cause,
    })
  }
  const system = typeof doc.arch === 'string' ? doc.arch : undefined
  return {
    arch: system ? ARCH_BY_SYSTEM[system] : undefined,
    version: typeof doc.version === 'string' ? doc.version : undefined,
  }
}

/** The cmdline file is one line; mb trims it before passing -append. */
export function readCmdline(path: string): string {
  return readFileSync(path, 'utf8').trim()
}
