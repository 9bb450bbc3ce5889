import type { Arch, SandboxOptionsInput } from '../config/options.js'
import { planBoot, type BootPlan } from '../config/plan.js'
import { HarnessError } from '../errors.js'
import type { LogSink } from '../log.js'
import { resolveMixtape } from '../mixtape/resolve.js'
import { kvmNoteSaid } from '../sandbox/accel.js'
import { requireQemu } from '../vmm/qemu-process.js'
import { type KvmProbe, probeKvm } from './kvm.js'
import { which } from './which.js'

export interface PreflightDeps {
  which: (name: string) => string | undefined
  probeKvm: (arch: Arch, qemuBinary: string) => Promise<KvmProbe>
  /** Resolve (and, for a remote ref, pull) the mixtape: errors name what is wrong with it. */
  resolveMixtape: (ref: string, arch: Arch) => Promise<unknown>
}

export interface PreflightResult {
  arch: Arch
  accel: 'kvm' | 'tcg'
  /** Said once per run: KVM is not usable and TCG (slower) will run the guests. */
  warnings: string[]
}

const realDeps = (log: LogSink): PreflightDeps => ({
  which: (name) => which(name),
  probeKvm: (arch, binary) => probeKvm(arch, binary),
  resolveMixtape: (ref, arch) => resolveMixtape(ref, { arch, log }),
})

/**
 * What a run needs of the host, checked once before any VM boots, each failure one HarnessError
 * naming the fix: a guest architecture, the QEMU binary and qemu-img, KVM when the options
 * demand it (`accel: 'kvm'`; otherwise its absence is a warning, TCG runs the guests), and a
 * mixtape that resolves for this architecture. Whether a mixtape's agent starts is known only
 * by booting it: `stereos-harness doctor --mixtape REF` does that.
 */
export async function hostPreflight(
  input: SandboxOptionsInput | BootPlan | unknown,
  log: LogSink,
  deps: PreflightDeps = realDeps(log),
): Promise<PreflightResult> {
  const options = planBoot(input)
  const { arch, qemuBinary: binary } = options
  // The boot's own check and message (QEMU_NOT_FOUND naming the package), now rather than per file.
  requireQemu(binary)
  if (!deps.which('qemu-img')) {
    throw new HarnessError('QEMU_NOT_FOUND', 'qemu-img was not found on PATH', { fix: 'install qemu-utils (Debian/Ubuntu: apt-get install qemu-utils)' })
  }
  const warnings: string[] = []
  let accel: 'kvm' | 'tcg' = 'tcg'
  if (options.accel !== 'tcg') {
    const kvm = await deps.probeKvm(arch, binary)
    if (kvm.usable) accel = 'kvm'
    else if (options.accel === 'kvm') {
      throw new HarnessError('HOST', `accel is 'kvm' but KVM cannot run this guest: ${kvm.reason}`, {
        fix: kvm.fix ? `${kvm.fix}; or set accel: 'auto' to run under TCG emulation` : "set accel: 'auto' to run under TCG emulation (several times slower)",
      })
    } else {
      kvmNoteSaid(arch)
      warnings.push(
        `KVM is not usable (${kvm.reason}): guests run under TCG emulation, several times slower.${kvm.fix ? ` Fix: ${kvm.fix}.` : ''} Set accel: 'tcg' to silence this.`,
      )
    }
  }
  await deps.resolveMixtape(options.mixtape, arch)
  return { arch, accel, warnings }
}
