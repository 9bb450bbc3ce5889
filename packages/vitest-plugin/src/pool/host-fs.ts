import { mkdir, rm, writeFile } from 'node:fs/promises'
import { dirname, relative, resolve } from 'node:path'
import { HOST_FS_TAG, type HostFsReply, type HostFsRequest } from '../guest/host-fs.js'

/** Carries out a guest's write request, only inside the shared dir (the paths the guest can see). */
export async function serveHostFs(message: HostFsRequest, sharedDir: string): Promise<HostFsReply> {
  const { request, id } = message
  const path = resolve(request.path)
  const rel = relative(sharedDir, path)
  if (rel.startsWith('..') || rel === '' || resolve(sharedDir, rel) !== path) {
    return { [HOST_FS_TAG]: 'reply', id, error: `stereos: the guest may only write under the shared project dir ${sharedDir}, not ${path}` }
  }
  try {
    if (request.op === 'write') {
      await mkdir(dirname(path), { recursive: true })
      await writeFile(path, request.data)
    }
    else if (request.op === 'mkdir') await mkdir(path, { recursive: true })
    else await rm(path, { force: true })
    return { [HOST_FS_TAG]: 'reply', id }
  } catch (err) {
    return { [HOST_FS_TAG]: 'reply', id, error: (err as Error).message }
  }
}
