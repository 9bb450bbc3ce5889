import { resolve } from 'node:path'
import { HarnessError } from '../errors.js'
import { hostArch } from '../host/arch.js'
import { PROFILES } from '../vmm/profile.js'
import { invalidOptions, Network, parseSandboxOptions, SandboxOptions, type Arch, type ResolvedSandboxOptions, type SandboxOptionsInput } from './options.js'
import { toMiB } from './size.js'

/** Deeply read-only: a plan is shared by every boot made from it, so nobody may change it. */
type Frozen<T> = T extends (infer U)[] ? readonly Frozen<U>[] : T extends object ? { readonly [K in keyof T]: Frozen<T[K]> } : T

/**
 * One boot's options, parsed once and resolved: what the pool, Sandbox.boot and the host
 * preflight all take. The option fields are the schema's output (SandboxOptions is the single
 * source of their types), with `arch` and `qemuBinary` resolved for this host, shared dirs as
 * absolute paths, and the sizes QEMU and the jcard take. Immutable: derive another with
 * withHostPorts or withShares. Make one with planBoot (input) or planFromOptions (parsed).
 */
export type BootPlan = Frozen<Omit<ResolvedSandboxOptions, 'arch' | 'qemuBinary'>> & {
  /** The guest architecture: the option, else the host's. */
  readonly arch: Arch
  /** The QEMU binary: the option, else qemu-system-<arch> (found on PATH at boot). */
  readonly qemuBinary: string
  /** resources.memory as QEMU's `-m` takes it. */
  readonly memoryMiB: number
}

/** Plans made here: anything else handed to Sandbox.boot is input, and is parsed. */
const made = new WeakSet<object>()

export function isBootPlan(value: unknown): value is BootPlan {
  return typeof value === 'object' && value !== null && made.has(value)
}

/** Parse the options (errors name every offending path) and resolve them into a plan; a plan is returned as it is. */
export function planBoot(input: SandboxOptionsInput | BootPlan | unknown, root = 'options'): BootPlan {
  return isBootPlan(input) ? input : planFromOptions(parseSandboxOptions(input, root))
}

/**
 * A plan from options a schema has parsed already (SandboxOptions, or one that extends it: only
 * SandboxOptions' keys are taken), so nothing is parsed again.
 */
export function planFromOptions(options: ResolvedSandboxOptions): BootPlan {
  const arch = options.arch ?? hostArch()
  if (!arch) {
    throw new HarnessError('HOST', `This host's architecture (${process.arch}) has no matching guest architecture`, {
      fix: "set arch: 'x86_64' or 'aarch64' to emulate one",
    })
  }
  // A copy: freezing the plan must not freeze the caller's objects.
  const own = structuredClone(Object.fromEntries(Object.keys(SandboxOptions.shape).map((key) => [key, options[key as keyof ResolvedSandboxOptions]])))
  return seal({
    ...(own as ResolvedSandboxOptions),
    arch,
    qemuBinary: options.qemuBinary ?? PROFILES[arch].qemuBinary,
    memoryMiB: toMiB(options.resources.memory),
    shared: options.shared.map((share) => ({ ...share, host: resolve(share.host) })),
  })
}

/**
 * The plan with these host ports declared (the Vitest pool learns them when it leases a VM),
 * checked as the options' network is: each port once, and none with mode 'none'.
 */
export function withHostPorts(plan: BootPlan, hostPorts: readonly number[]): BootPlan {
  const network = Network.safeParse({ ...plan.network, hostPorts })
  if (!network.success) throw invalidOptions(network.error, 'options.network')
  return seal({ ...plan, network: network.data })
}

/** The plan with more shared dirs after its own (the Vitest pool's project view). */
export function withShares(plan: BootPlan, shares: readonly { host: string; guest: string; readonly: boolean }[]): BootPlan {
  return seal({ ...plan, shared: [...plan.shared, ...shares.map((share) => ({ ...share, host: resolve(share.host) }))] })
}

function seal(plan: BootPlan): BootPlan {
  const frozen = deepFreeze(plan)
  made.add(frozen)
  return frozen
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    for (const child of Object.values(value)) deepFreeze(child)
    Object.freeze(value)
  }
  return value
}
