import { existsSync } from 'node:fs'
import { createServer, type Server } from 'node:net'
import type { Duplex } from 'node:stream'

export type ListenMode = 'auto' | 'vsock' | 'tcp'

export interface Listening {
  kind: 'vsock' | 'tcp'
  describe: string
  close(): void
}

interface VsockAddon {
  localCid(): number
  listen(port: number, options?: { cid?: number }): { on(event: 'connection', fn: (socket: Duplex) => void): unknown; close(): void }
}

/**
 * vsock when the guest has a vsock device with a real CID (the host gave QEMU a
 * vhost-vsock-pci device), else TCP on all interfaces, reached through the host's hostfwd.
 * The addon is loaded from `vsockModule` (in the harness share) only when needed.
 */
export async function listen(
  mode: ListenMode,
  port: number,
  host: string,
  vsockModule: string | undefined,
  onConnection: (socket: Duplex) => void,
): Promise<Listening> {
  if (mode !== 'tcp') {
    const why = await vsockUsable(vsockModule)
    if (why.ok) {
      const server = why.addon.listen(port)
      server.on('connection', onConnection)
      return { kind: 'vsock', describe: `vsock cid ${why.cid} port ${port}`, close: () => server.close() }
    }
    if (mode === 'vsock') throw new Error(`cannot listen on vsock: ${why.reason}`)
  }
  const server: Server = createServer({ noDelay: true }, onConnection)
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => resolve())
  })
  const address = server.address()
  const actual = typeof address === 'object' && address ? address.port : port
  return { kind: 'tcp', describe: `tcp ${host}:${actual}`, close: () => server.close() }
}

async function vsockUsable(vsockModule: string | undefined): Promise<{ ok: true; addon: VsockAddon; cid: number } | { ok: false; reason: string }> {
  if (!existsSync('/dev/vsock')) return { ok: false, reason: 'no /dev/vsock' }
  if (!vsockModule || !existsSync(vsockModule)) return { ok: false, reason: 'the vsock addon is not in the harness share' }
  try {
    const addon = (await import(vsockModule)) as VsockAddon
    const cid = addon.localCid()
    // 1 and 2 are the local/host CIDs: without a vhost-vsock device the guest has no CID of its own.
    if (cid < 3 || cid === 0xffffffff) return { ok: false, reason: `local CID is ${cid}` }
    return { ok: true, addon, cid }
  } catch (err) {
    return { ok: false, reason: (err as Error).message.split('\n')[0] ?? 'addon failed' }
  }
}
