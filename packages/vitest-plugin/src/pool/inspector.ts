import { GuestPortForward } from '@stereos/harness'
import type { PoolVm } from './vm.js'

/**
 * `vitest --inspect[-brk]`: Vitest's worker opens Node's inspector itself, inside the guest, on
 * the guest's 127.0.0.1. The pool listens on the host's 127.0.0.1 at the port the user asked for
 * (9229 by default, as with forks) and carries each debugger connection there (GuestPortForward).
 */
export interface InspectorConfig {
  enabled?: boolean
  port?: number
  host?: string
}

export type InspectorForward = GuestPortForward

/** Listen on the host's 127.0.0.1:port and relay to the guest's inspector on the same port. */
export function forwardInspector(vm: Pick<PoolVm, 'spawn'>, nodePath: string, config: InspectorConfig): Promise<InspectorForward> {
  const port = config.port ?? 9229
  return GuestPortForward.open(vm, nodePath, port, port, 'pass another port (--inspect=127.0.0.1:9230 or --inspect-brk=…) or stop what listens there')
}
