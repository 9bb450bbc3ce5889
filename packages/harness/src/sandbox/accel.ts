import type { Arch } from '../config/options.js'
import type { BootPlan } from '../config/plan.js'
import { HarnessError } from '../errors.js'
import { probeKvm } from '../host/kvm.js'
import type { LogSink } from '../log.js'
import type { Accel } from '../vmm/profile.js'

export interface AccelChoice {
  accel: Accel
  /** Why KVM is not used, when it is not. */
  note: string | undefined
}

// Once-per-process cache: the "KVM unusable, using TCG" line is said once per guest arch, not per VM.
const notedArches = new Set<Arch>()

/** The host preflight already said it (with the fix): the boot does not say it again. */
export function kvmNoteSaid(arch: Arch): void {
  notedArches.add(arch)
}

/** KVM where a probe shows it can run this guest, else TCG with one log line saying why. */
export async function chooseAccel(options: Pick<BootPlan, 'accel' | 'arch' | 'qemuBinary'>, log: LogSink): Promise<AccelChoice> {
  const { arch } = options
  if (options.accel === 'tcg') return { accel: 'tcg', note: 'TCG requested' }
  const kvm = await probeKvm(arch, options.qemuBinary)
  if (kvm.usable) return { accel: 'kvm', note: undefined }
  if (options.accel === 'kvm') {
    throw new HarnessError('HOST', `options.accel is 'kvm' but KVM cannot run this guest: ${kvm.reason}`, {
      fix: kvm.fix ?? "use accel: 'auto' to fall back to TCG",
    })
  }
  const note = `KVM unusable (${kvm.reason}); using TCG emulation, which is several times slower`
  if (!notedArches.has(arch)) {
    notedArches.add(arch)
    log(note)
  }
  return { accel: 'tcg', note }
}
