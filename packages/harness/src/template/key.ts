import { createHash } from 'node:crypto'
import { readFileSync, realpathSync, statSync } from 'node:fs'
import { basename } from 'node:path'
import { execaSync } from 'execa'
import type { Mixtape } from '../mixtape/mixtape.js'
import { SHARE_TAG } from '../share/harness-share.js'
import { buildQemuArgv, type QemuSpec } from '../vmm/argv.js'

/** Bumped when what a template holds, or how it is restored, changes. */
export const TEMPLATE_FORMAT = 2

/**
 * What decides whether a saved VM can stand in for a cold boot. A restore needs the same
 * machine: QEMU (its version and machine type), CPU model, memory, vCPUs and device set, and the
 * same guest disk and memory: the mixtape's files and the disk's size. What differs per VM and
 * is not in the migration stream (file and socket paths, forwarded host ports, the vsock CID,
 * the host dirs behind 9p shares) is left out, so every lease of a kind shares one template.
 */
export interface TemplateKeyInputs {
  spec: QemuSpec
  qemuBinary: string
  mixtape: Mixtape
  diskBytes: number
}

export interface TemplateKey {
  /** 24 hex digits of the hash: the template's directory name. */
  id: string
  /** The mixtape's boot files as `path:size:mtime`: a template whose files changed is stale (prune). */
  mixtapeFiles: string[]
  /** The inputs in words, stored with the template and printed by `stereos-harness ls --templates`. */
  describe: {
    arch: string
    accel: string
    cpu: string
    cpus: number
    memoryMiB: number
    diskBytes: number
    qemu: string
    mixtape: string
  }
}

export function templateKey(inputs: TemplateKeyInputs): TemplateKey {
  const { spec, mixtape } = inputs
  const qemu = qemuVersion(inputs.qemuBinary)
  const mixtapeFiles = mixtapeIdentity(mixtape)
  const material = {
    format: TEMPLATE_FORMAT,
    qemu,
    argv: machineArgv(spec),
    // `-cpu host` (KVM) is whatever this host's CPU is: a template is only good on the same model.
    hostCpu: spec.profile.cpu[spec.accel] === 'host' ? hostCpuModel() : undefined,
    diskBytes: inputs.diskBytes,
    mixtape: mixtapeFiles,
    // The harness share's dir name carries its content hash; a new agent means a new template.
    shares: spec.shares.map((share) => ({
      tag: share.tag,
      readonly: share.readonly,
      version: share.tag === SHARE_TAG ? basename(share.host) : undefined,
    })),
    // The share image's name is its share's version (<arch>-<hash>.ext4).
    imageDisk: spec.imageDisk ? basename(spec.imageDisk.path) : undefined,
  }
  const id = createHash('sha256').update(JSON.stringify(material)).digest('hex').slice(0, 24)
  return {
    id,
    mixtapeFiles,
    describe: {
      arch: spec.profile.arch,
      accel: spec.accel,
      cpu: spec.profile.cpu[spec.accel],
      cpus: spec.cpus,
      memoryMiB: spec.memoryMiB,
      diskBytes: inputs.diskBytes,
      qemu,
      mixtape: mixtape.ref,
    },
  }
}

/** QEMU's argv with every per-VM value replaced by a placeholder. */
export function machineArgv(spec: QemuSpec): string[] {
  return buildQemuArgv({
    ...spec,
    disk: { ...spec.disk, path: '<disk>' },
    qmpSocket: '<qmp>',
    serialLog: '<serial>',
    pidfile: '<pidfile>',
    // Declared host ports (guestfwd) are not in the migration stream either: libslirp saves only chardev guestfwds.
    network:
      spec.network.mode === 'user' ? { ...spec.network, forwards: spec.network.forwards.map((f) => ({ ...f, host: 0 })), guestForwards: [] } : spec.network,
    ...(spec.vsock ? { vsock: { ...spec.vsock, cid: 0 } } : {}),
    shares: spec.shares.map((share) => ({ ...share, host: `<${share.tag}>` })),
    ...(spec.imageDisk ? { imageDisk: { ...spec.imageDisk, path: '<image-disk>' } } : {}),
  })
}

/** The mixtape's boot files by path, size and modification time: a re-pull or rebuild changes them. */
function mixtapeIdentity(mixtape: Mixtape): string[] {
  const files = [mixtape.disk.path, mixtape.kernel?.kernel, mixtape.kernel?.initrd, mixtape.kernel?.cmdline].filter((f): f is string => f !== undefined)
  return files.map((file) => fileIdentity(realpathSync(file)) ?? file)
}

/** `path:size:mtime`, or undefined when the file is gone. */
export function fileIdentity(path: string): string | undefined {
  try {
    const s = statSync(path)
    return `${path}:${s.size}:${s.mtimeMs}`
  } catch {
    return undefined
  }
}

const versions = new Map<string, string>()

/** `qemu-system-* --version`'s first line, once per binary and process. */
function qemuVersion(binary: string): string {
  let version = versions.get(binary)
  if (version === undefined) {
    const result = execaSync(binary, ['--version'], { reject: false, timeout: 10_000 })
    version = `${result.stdout}`.split('\n')[0]?.trim() || `unknown (${binary})`
    versions.set(binary, version)
  }
  return version
}

function hostCpuModel(): string {
  try {
    const info = readFileSync('/proc/cpuinfo', 'utf8')
    const model = /^(?:model name|CPU part)\s*:\s*(.*)$/m.exec(info)?.[1] ?? ''
    const flags = /^(?:flags|Features)\s*:\s*(.*)$/m.exec(info)?.[1] ?? ''
    return `${model} ${createHash('sha256').update(flags).digest('hex').slice(0, 12)}`
  } catch {
    return 'unknown'
  }
}
