import type { Arch } from '../config/options.js'

/** An unpacked mixtape on disk, laid out as `mb pull` leaves it. */
export interface Mixtape {
  /** The reference the user gave (`fixture`, a path, `coder:latest`). */
  ref: string
  dir: string
  /** From mixtape.toml when present. */
  arch: Arch | undefined
  version: string | undefined
  disk: { path: string; format: 'raw' | 'qcow2' }
  /** Direct kernel boot when all three files exist; EFI boot otherwise. */
  kernel: { kernel: string; initrd: string; cmdline: string } | undefined
}
