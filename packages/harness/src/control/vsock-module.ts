import type { Duplex } from 'node:stream'

/**
 * The part of `@stereos/vsock` the harness uses. Typed here, not imported, so tests inject
 * fakes and so the addon's package is only loaded when a boot or `doctor` asks for it.
 */
export interface VsockModule {
  connect(cid: number, port: number, options?: { timeoutMs?: number }): Promise<Duplex>
  reserveCid(options?: { from?: number }): { readonly cid: number; readonly fd: number; release(): void }
  /** Device present and openable; needs no addon. */
  hostHasVsock(): { ok: boolean; reason: string }
  /** Throws when the native addon cannot be loaded on this platform. */
  loadBinding(): unknown
}

export type LoadVsock = () => Promise<VsockModule>

let cached: Promise<VsockModule> | undefined

/**
 * The real addon package, imported lazily: a host where it cannot load (no prebuild for this
 * platform, no compiler) still boots over TCP instead of failing at import time.
 */
export const loadVsock: LoadVsock = () => {
  cached ??= import('@stereos/vsock').then((mod): VsockModule => mod)
  return cached
}
