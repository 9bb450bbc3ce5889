import { HarnessError } from '../../errors.js'
import type { Arch } from '../../config/options.js'
import type { Descriptor } from './media-types.js'

/** OCI architecture names of our guest architectures. */
export const OCI_ARCH: Record<Arch, string> = { x86_64: 'amd64', aarch64: 'arm64' }

export interface PlatformPick {
  descriptor: Descriptor
  /** 1: platform + raw; 2: platform, any format; 3: raw, any platform; 4: the first entry. */
  tier: 1 | 2 | 3 | 4
  /** mb's warning for tiers 2–4. */
  warning: string | undefined
}

/**
 * mb's `selectIndexManifest` (PR #52), one pass in index order that stops at the first tier-1
 * hit. `hasRaw` probes a child manifest for a raw disk layer; a probe that fails counts as "no".
 * The platform is the guest's (`linux/<arch>`), not the host's: a harness may boot a foreign arch.
 */
export async function selectIndexManifest(
  manifests: Descriptor[],
  os: string,
  architecture: string,
  hasRaw: (d: Descriptor) => Promise<boolean>,
): Promise<PlatformPick> {
  if (manifests.length === 0) {
    throw new HarnessError('MIXTAPE_INVALID', 'the image index lists no manifests', {
      fix: 'the image is published wrongly: republish it, or pull another tag',
    })
  }
  let platformRaw: Descriptor | undefined
  let platformAny: Descriptor | undefined
  let anyRaw: Descriptor | undefined
  for (const m of manifests) {
    let probed: boolean | undefined
    const checkRaw = async () => (probed ??= await hasRaw(m).catch(() => false))
    if (m.platform?.os === os && m.platform.architecture === architecture) {
      platformAny ??= m
      if (!platformRaw && (await checkRaw())) platformRaw = m
    }
    if (!anyRaw && (await checkRaw())) anyRaw = m
    if (platformRaw) break
  }
  const where = `${os}/${architecture}`
  if (platformRaw) return { descriptor: platformRaw, tier: 1, warning: undefined }
  if (platformAny)
    return { descriptor: platformAny, tier: 2, warning: `no raw format for ${where} in the index; using the ${where} manifest in another format` }
  if (anyRaw) return { descriptor: anyRaw, tier: 3, warning: `no ${where} manifest in the index; using a raw-format manifest that may not run on this host` }
  return { descriptor: manifests[0]!, tier: 4, warning: 'no raw format in the index; using its first manifest' }
}
