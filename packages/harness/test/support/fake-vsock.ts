import { PassThrough, type Duplex } from 'node:stream'
import type { VsockModule } from '../../src/control/vsock-module.js'

/**
 * A VsockModule that behaves like the kernel where it matters: a CID held by any reservation
 * is refused (EADDRINUSE) until released, so concurrent callers can never share one.
 */
export function fakeVsock(options: { host?: { ok: boolean; reason: string }; addonError?: Error; held?: Set<number> } = {}) {
  const held = options.held ?? new Set<number>()
  const connects: { cid: number; port: number; timeoutMs: number | undefined }[] = []
  let nextFd = 100
  const mod: VsockModule = {
    hostHasVsock: () => options.host ?? { ok: true, reason: '/dev/vhost-vsock is present and opens read/write' },
    loadBinding: () => {
      if (options.addonError) throw options.addonError
      return {}
    },
    reserveCid: ({ from = 3 } = {}) => {
      for (let cid = from; cid < from + 65_536; cid++) {
        if (held.has(cid)) continue // the kernel's EADDRINUSE: try the next one
        held.add(cid)
        let released = false
        return {
          cid,
          fd: nextFd++,
          release: () => {
            if (released) return
            released = true
            held.delete(cid)
          },
        }
      }
      throw Object.assign(new Error('allocateCid EADDRINUSE'), { code: 'EADDRINUSE' })
    },
    connect: async (cid, port, opts): Promise<Duplex> => {
      connects.push({ cid, port, timeoutMs: opts?.timeoutMs })
      return new PassThrough()
    },
  }
  return { mod, held, connects, load: async () => mod }
}
