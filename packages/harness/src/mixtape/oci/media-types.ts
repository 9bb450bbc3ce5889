import { HarnessError } from '../../errors.js'

/** Manifest media types (OCI and Docker). */
export const OCI_INDEX = 'application/vnd.oci.image.index.v1+json'
export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json'
export const DOCKER_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json'
export const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json'
export const MANIFEST_ACCEPT = [OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST].join(', ')

export function isIndexMediaType(mediaType: string | undefined): boolean {
  return mediaType === OCI_INDEX || mediaType === DOCKER_LIST
}

/** stereOS layer media types, exactly as mb's pull.go names them (STEREOS-FACTS §4.2). */
export const MEDIA = {
  diskRawZstd: 'application/vnd.papercompute.stereos.disk.v1+raw+zstd',
  diskQcow2Zstd: 'application/vnd.papercompute.stereos.disk.v1+qcow2+zstd',
  diskRaw: 'application/vnd.papercompute.stereos.disk.v1+raw',
  diskQcow2: 'application/vnd.papercompute.stereos.disk.v1+qcow2',
  kernel: 'application/vnd.papercompute.stereos.kernel.v1',
  initrd: 'application/vnd.papercompute.stereos.initrd.v1',
  cmdline: 'application/vnd.papercompute.stereos.cmdline.v1',
  init: 'application/vnd.papercompute.stereos.init.v1',
  mixtapeToml: 'application/vnd.papercompute.stereos.mixtape-manifest.v1+toml',
} as const

export const TITLE_ANNOTATION = 'org.opencontainers.image.title'

/** Default file name and whether the blob is zstd to decompress, per media type. */
const OUTPUTS: Record<string, { file: string; zstd: boolean }> = {
  [MEDIA.diskRawZstd]: { file: 'stereos.img.zst', zstd: true },
  [MEDIA.diskQcow2Zstd]: { file: 'stereos.qcow2.zst', zstd: true },
  [MEDIA.diskRaw]: { file: 'stereos.img', zstd: false },
  [MEDIA.diskQcow2]: { file: 'stereos.qcow2', zstd: false },
  [MEDIA.kernel]: { file: 'bzImage', zstd: false },
  [MEDIA.initrd]: { file: 'initrd', zstd: false },
  [MEDIA.cmdline]: { file: 'cmdline', zstd: false },
  [MEDIA.init]: { file: 'init', zstd: false },
  [MEDIA.mixtapeToml]: { file: 'mixtape.toml', zstd: false },
}

export function isRawDiskMediaType(mediaType: string | undefined): boolean {
  return mediaType === MEDIA.diskRawZstd || mediaType === MEDIA.diskRaw
}

export interface Descriptor {
  mediaType: string
  digest: string
  size: number
  annotations?: Record<string, string> | undefined
  platform?: { os?: string; architecture?: string; variant?: string } | undefined
}

export interface LayerOutput {
  /** The file written into the mixtape directory. */
  file: string
  /** The blob is zstd: `file` is its decompressed form and `blobName` (…​.zst) is not kept. */
  zstd: boolean
  blobName: string
}

/**
 * Where a layer lands, by mb's rules: the title annotation (reduced to its basename) or the media
 * type's default, or the digest hex for unknown types; zstd layers lose a trailing `.zst`.
 * Names that would escape the directory or hide as dot-files are refused (mb would write them).
 */
export function layerOutput(layer: Descriptor, reserved: ReadonlySet<string>): LayerOutput {
  const known = OUTPUTS[layer.mediaType]
  const title = layer.annotations?.[TITLE_ANNOTATION]
  const blobName = title ? (title.split('/').pop() ?? '') : (known?.file ?? layer.digest.slice(layer.digest.indexOf(':') + 1))
  const zstd = known?.zstd ?? false
  const file = zstd && blobName.endsWith('.zst') ? blobName.slice(0, -4) : blobName
  if (!file || file === '.' || file === '..' || file.startsWith('.') || file.includes('\0') || reserved.has(file)) {
    throw new HarnessError(
      'MIXTAPE_INVALID',
      `layer ${layer.digest} (${layer.mediaType}) would be written as "${file}", which is not a plain file name or is already taken`,
      {
        fix: 'the image is published wrongly: republish it with plain, distinct org.opencontainers.image.title annotations',
      },
    )
  }
  return { file, zstd, blobName }
}

/** Check a descriptor from a manifest before trusting its digest and size. */
export function checkDescriptor(value: unknown, where: string): Descriptor {
  const d = value as Partial<Descriptor> | null
  const ok =
    d !== null &&
    typeof d === 'object' &&
    typeof d.mediaType === 'string' &&
    typeof d.digest === 'string' &&
    /^sha256:[a-f0-9]{64}$/.test(d.digest) &&
    Number.isSafeInteger(d.size) &&
    (d.size as number) >= 0
  if (!ok) {
    throw new HarnessError(
      'MIXTAPE_INVALID',
      `${where} holds a descriptor without a valid mediaType, sha256 digest and size: ${JSON.stringify(value).slice(0, 200)}`,
      {
        fix: 'the image is published wrongly: republish it, or pull another tag',
      },
    )
  }
  return d as Descriptor
}
