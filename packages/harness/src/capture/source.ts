import type { Arch } from '../config/options.js'
import type { Mixtape } from '../mixtape/mixtape.js'
import type { QemuSpec } from '../vmm/argv.js'
import type { SshTarget } from '../sandbox/ssh-bootstrap.js'
import type { Secret } from './scan.js'

/**
 * What a booted VM hands its Sandbox for a later capture (boot.ts fills it): the machine as QEMU
 * runs it, the mixtape its disk is a delta over, a root path into the guest, and the values that
 * must not be in a capture (held in memory only, to check the capture against).
 */
export interface CaptureSource {
  arch: Arch
  qemuBinary: string
  spec: QemuSpec
  mixtape: Mixtape
  diskBytes: number
  /** The VM's disk (a qcow2 over the mixtape's image, or over a template's disk). */
  vmDisk: string
  controlPlane: 'vsock' | 'tcp' | 'unix'
  network: 'nat' | 'none'
  bootstrap: 'agentd' | 'ssh' | 'none'
  /** The user's shares: QEMU tag, guest path. */
  shares: { tag: string; guest: string; readonly: boolean }[]
  /** The harness share's version (its dir name), when the VM has one. */
  shareVersion: string | undefined
  /** admin over SSH (passwordless sudo): how the guest is scrubbed. */
  admin: SshTarget | undefined
  /** Secret values, the agent token and the SSH public key given to the VM. */
  secretValues: Secret[]
}
