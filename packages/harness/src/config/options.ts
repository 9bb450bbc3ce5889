import { z } from 'zod'
import { HarnessError } from '../errors.js'
import { parseSize } from './size.js'

/** zod schemas are the single source of the Sandbox option types. */

export const Arch = z.enum(['x86_64', 'aarch64'])
export type Arch = z.infer<typeof Arch>

const Size = z.union([z.string(), z.number()]).transform((value, ctx) => {
  const bytes = parseSize(value)
  if (bytes === undefined) {
    ctx.addIssue({ code: 'custom', message: `expected a size like "512MiB", "4GiB" or a byte count, got ${JSON.stringify(value)}` })
    return z.NEVER
  }
  return bytes
})

const Port = z.int().min(1).max(65535)

export const Forward = z.strictObject({
  host: Port,
  guest: Port,
  proto: z.enum(['tcp', 'udp']).default('tcp'),
})

/** Host TCP ports the guest may reach: each at most once. */
export const HostPorts = z.array(Port).refine((ports) => new Set(ports).size === ports.length, 'each port at most once')

/** The fields of Network, for schemas that replace one (the Vitest plugin's hostPorts may be a function). */
export const NetworkFields = {
  /**
   * `nat`: the guest reaches the outside through QEMU user networking (and the host's 127.0.0.1
   * only at `hostPorts`). `none`: the guest reaches nothing; with vsock it has no NIC at all (as
   * mb), without vsock it gets QEMU user networking with restrict=on, which drops everything the
   * guest sends out while the host's 127.0.0.1 forwards (control plane, agent, SSH, `forwards`)
   * keep working.
   */
  mode: z.enum(['nat', 'none']).default('nat'),
  forwards: z.array(Forward).default([]),
  /**
   * TCP ports on the host's 127.0.0.1 the guest reaches as `host.stereos.internal:<port>`
   * (address 10.0.2.100); every other host port stays closed. Mode 'nat' only.
   */
  hostPorts: HostPorts.default([]),
}

/** hostPorts with mode 'none' is a contradiction: refused, not silently dropped. */
export function refuseHostPortsWithoutNetwork(network: { mode: 'nat' | 'none'; hostPorts: unknown }, ctx: z.RefinementCtx): void {
  const declared = typeof network.hostPorts === 'function' || (Array.isArray(network.hostPorts) && network.hostPorts.length > 0)
  if (network.mode === 'none' && declared) {
    ctx.addIssue({
      code: 'custom',
      path: ['hostPorts'],
      message: "network.mode 'none' reaches no host port: remove hostPorts, or use mode 'nat' (the default) to reach them",
    })
  }
}

export const Network = z.strictObject(NetworkFields).superRefine(refuseHostPortsWithoutNetwork)

export const SharedDir = z.strictObject({
  host: z.string().min(1),
  guest: z.string().regex(/^\//, 'must be an absolute guest path'),
  readonly: z.boolean().default(false),
})

/** Secret names become file names and environment variable names in the guest. */
const SecretName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_.-]*$/, 'must be a plain file name (letters, digits, _ . -)')

export const Resources = z.strictObject({
  cpus: z.int().min(1).max(64).default(1),
  memory: Size.default(512 * 1024 ** 2),
  disk: Size.default(4 * 1024 ** 3),
})

export const SandboxOptions = z.strictObject({
  /** `fixture`, a directory holding an unpacked mixtape, `name[:tag]` (mb's cache, pulled when missing) or a full OCI reference. */
  mixtape: z.string().min(1).default('fixture'),
  /** Guest architecture; defaults to the host's. A foreign arch runs under TCG. */
  arch: Arch.optional(),
  /** `auto` uses KVM when a probe shows it can run a guest, else TCG. */
  accel: z.enum(['auto', 'kvm', 'tcg']).default('auto'),
  /**
   * How the host reaches stereosd: `auto` uses vsock where /dev/vhost-vsock and the addon are
   * usable, else TCP through a 127.0.0.1 port forward; `vsock` fails on hosts without it.
   */
  controlPlane: z.enum(['auto', 'vsock', 'tcp']).default('auto'),
  resources: Resources.default({ cpus: 1, memory: 512 * 1024 ** 2, disk: 4 * 1024 ** 3 }),
  network: Network.default({ mode: 'nat', forwards: [], hostPorts: [] }),
  shared: z.array(SharedDir).default([]),
  secrets: z.record(SecretName, z.string()).default({}),
  /** jcard.toml text sent with set_config; default: a jcard naming the mixtape and resources. */
  jcard: z.string().optional(),
  /**
   * How the guest agent (exec, files) is started: `agentd` runs the mixtape's `agent` launcher
   * through set_config (harness-ready mixtapes, the fixture); `ssh` starts it as root over SSH
   * as admin (stock mixtapes without `agent`); `none` boots without an agent.
   */
  bootstrap: z.enum(['agentd', 'ssh', 'none']).default('agentd'),
  /** Milliseconds from provisioning until the guest agent (and sshd, where SSH is forwarded) must answer. */
  agentTimeoutMs: z.int().positive().default(60_000),
  /** Milliseconds from QEMU start until stereosd must report ready. */
  bootTimeoutMs: z.int().positive().default(120_000),
  /** Keep the VM directory (disk, logs) when boot or shutdown fails. */
  keepOnFailure: z.boolean().default(false),
  /**
   * Start QEMU so that it can outlive this process (Sandbox.detach(), the Vitest pool's keepVm):
   * without --pdeathsig, in its own process group. A VM that is not detached is still shut down
   * by shutdown(); one left behind by a killed runner is reaped by the next boot's orphan sweep.
   */
  detachable: z.boolean().default(false),
  /**
   * `auto`: restore the VM from a template saved by the first cold boot of its kind (same
   * mixtape, QEMU, machine, CPU, memory, disk size and devices; see README "Templates"), and
   * save one when there is none. `off`: always boot cold. $STEREOS_TEMPLATE=off sets the default.
   */
  template: z.enum(['auto', 'off']).default(() => (process.env.STEREOS_TEMPLATE === 'off' ? 'off' : 'auto')),
  /** Where VM directories live; default $STEREOS_RUNTIME_DIR, $XDG_RUNTIME_DIR/stereos-harness or /tmp. */
  runtimeDir: z.string().optional(),
  /** QEMU binary to run instead of qemu-system-<arch> from PATH. */
  qemuBinary: z.string().optional(),
})

export type SandboxOptionsInput = z.input<typeof SandboxOptions>
export type ResolvedSandboxOptions = z.output<typeof SandboxOptions>

/** Parse user options; errors name every offending option path and how to fix it. */
export function parseSandboxOptions(input: unknown, root = 'options'): ResolvedSandboxOptions {
  const result = SandboxOptions.safeParse(input ?? {})
  if (result.success) return result.data
  throw invalidOptions(result.error, root)
}

export function invalidOptions(error: z.ZodError, root: string): HarnessError {
  const lines = error.issues.map((issue) => {
    const path = [root, ...issue.path.map(String)].join('.')
    return `  ${path}: ${issue.message}`
  })
  return new HarnessError('INVALID_OPTIONS', `Invalid sandbox options:\n${lines.join('\n')}`, {
    fix: 'correct the option(s) named above; see the Sandbox options in the README',
  })
}
