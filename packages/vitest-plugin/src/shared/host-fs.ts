/**
 * The one way the guest changes host files: snapshot files Vitest resolved for the running test
 * file and `toMatchFileSnapshot` targets, written by the host pool when Vitest's snapshot state
 * decides to write them (the guest also writes its own copy into its project view). Messages ride
 * the worker's ipc stream beside Vitest's own and never reach Vitest. The host checks every
 * request (pool/host-writes.ts); the guest is not trusted to ask only for these.
 */
export const HOST_FS_TAG = '__stereos_host_fs__'

export type HostFsOp = { op: 'write'; path: string; data: string } | { op: 'remove'; path: string }

export interface HostFsRequest {
  [HOST_FS_TAG]: 'request'
  id: number
  request: HostFsOp
}

export interface HostFsReply {
  [HOST_FS_TAG]: 'reply'
  id: number
  error?: string
}

export function isHostFsReply(message: unknown): message is HostFsReply {
  return typeof message === 'object' && message !== null && (message as Record<string, unknown>)[HOST_FS_TAG] === 'reply'
}

/** What the guest entry puts on globalThis for the snapshot environment. */
export interface HostFs {
  call(op: HostFsOp): Promise<void>
}

export const HOST_FS_GLOBAL = '__stereosHostFs'
