/**
 * Vitest's Node snapshot environment, with writes sent to the host (the project share is
 * read-only in the guest). Reads stay local: the share shows the host's files as they are.
 * The stereos plugin sets `snapshotEnvironment` to this module for its projects.
 */
import { VitestSnapshotEnvironment } from 'vitest/runtime'
import { HOST_FS_GLOBAL, type HostFs } from './host-fs.js'

function host(): HostFs {
  const fs = (globalThis as Record<string, unknown>)[HOST_FS_GLOBAL] as HostFs | undefined
  if (!fs) throw new Error('stereos snapshot environment: no host channel (this module runs only in the stereos pool)')
  return fs
}

class StereosSnapshotEnvironment extends VitestSnapshotEnvironment {
  override async prepareDirectory(dirPath: string): Promise<void> {
    await host().call({ op: 'mkdir', path: dirPath })
  }

  override async saveSnapshotFile(filepath: string, snapshot: string): Promise<void> {
    await host().call({ op: 'write', path: filepath, data: snapshot })
  }

  override async removeSnapshotFile(filepath: string): Promise<void> {
    await host().call({ op: 'remove', path: filepath })
  }
}

export default new StereosSnapshotEnvironment()
