import { readFileSync } from 'node:fs'
import { z } from 'zod'

/** Bumped when what a capture holds, or how it is restored, changes: another format is refused. */
export const CAPTURE_FORMAT = 1
export const MANIFEST_MEMBER = 'manifest.json'
/** The manifest is read into memory: bounded (the caller's `context` is the only free-form part). */
export const MANIFEST_MAX_BYTES = 1024 * 1024

const FileEntry = z.object({ bytes: z.number().int().nonnegative(), sha256: z.string().regex(/^[0-9a-f]{64}$/) })

/** What a restore needs to build the same machine, and what a reader needs to know what it holds. */
export const CaptureManifest = z.object({
  format: z.literal(CAPTURE_FORMAT),
  harness: z.object({
    version: z.string(),
    /** The harness share's version (`<arch>-<hash>`): its image is a disk of the saved machine. */
    share: z.string().optional(),
  }),
  created: z.string(),
  arch: z.enum(['x86_64', 'aarch64']),
  accel: z.enum(['kvm', 'tcg']),
  machine: z.object({
    qemu: z.string(),
    type: z.string(),
    cpu: z.string(),
    cpus: z.number().int().positive(),
    memoryMiB: z.number().int().positive(),
    diskBytes: z.number().int().positive(),
  }),
  mixtape: z.object({
    ref: z.string(),
    name: z.string().optional(),
    version: z.string().optional(),
    /** Where it was pulled from, by digest (`registry/repository@sha256:…`): debug pulls that when the disk is missing here. */
    pull: z
      .string()
      .regex(/^[^\s@]+@sha256:[0-9a-f]{64}$/)
      .optional(),
    /** The disk image the captured disk is a delta over, by content. */
    disk: z.object({ file: z.string(), format: z.enum(['raw', 'qcow2']), sha256: z.string().regex(/^[0-9a-f]{64}$/), bytes: z.number() }),
  }),
  /** How the VM was wired: a restore must present the same devices. */
  vm: z.object({
    controlPlane: z.enum(['vsock', 'tcp', 'unix']),
    network: z.enum(['nat', 'none']),
    bootstrap: z.enum(['agentd', 'ssh', 'none']),
    /** The harness share's ext4 image was attached (a template-capable boot). */
    shareImage: z.boolean(),
  }),
  shares: z.array(z.object({ tag: z.string(), guest: z.string(), readonly: z.boolean() })),
  /** Whether the migration stream (RAM and devices) is in the file, and why not. */
  ram: z.object({ included: z.boolean(), reason: z.string().optional() }),
  disk: z.object({ included: z.boolean(), reason: z.string().optional() }),
  /** Every other member, by name. */
  files: z.record(z.string(), FileEntry),
  /** What the caller said about the capture (test file, failed tests). */
  context: z.record(z.string(), z.json()),
  /**
   * Where the capture's time went, in ms: the guest's scrub, the save (RAM and devices, the disk
   * copied), then at once: the disk rebased, then searched and packed; the saved RAM searched.
   * The three after the save are optional: captures before them lack them.
   */
  timings: z.object({
    scrubMs: z.number(),
    saveMs: z.number(),
    rebaseMs: z.number().optional(),
    diskMs: z.number().optional(),
    ramScanMs: z.number().optional(),
    totalMs: z.number(),
  }),
})
export type CaptureManifest = z.infer<typeof CaptureManifest>

/** What every format has: enough to say why another one cannot be restored. */
const ManifestHead = z.object({ format: z.number(), arch: z.string().optional(), harness: z.object({ version: z.string() }).partial().optional() })
export type ManifestHead = z.infer<typeof ManifestHead>

export function parseManifestHead(text: string): ManifestHead | undefined {
  try {
    const parsed = ManifestHead.safeParse(JSON.parse(text))
    return parsed.success ? parsed.data : undefined
  } catch {
    return undefined
  }
}

/** This harness's package version (package.json beside dist/ and src/). */
export function harnessVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: unknown }
    return typeof pkg.version === 'string' ? pkg.version : 'unknown'
  } catch {
    return 'unknown'
  }
}
