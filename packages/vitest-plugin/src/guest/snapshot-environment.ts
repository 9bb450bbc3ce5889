/**
 * Vitest's Node snapshot environment, writing twice: into the guest's project view (so the rest
 * of the file reads what it wrote, as under forks) and, through the pool, to the host's file
 * (so `-u` and new snapshots persist). The host refuses anything that is not a snapshot file of
 * this run. The stereos plugin sets `snapshotEnvironment` to this module for its projects.
 */
import { VitestSnapshotEnvironment } from 'vitest/runtime'
import { HOST_FS_GLOBAL, type HostFs } from '../shared/host-fs.js'

function host(): HostFs {
  const fs = (globalThis as Record<string, unknown>)[HOST_FS_GLOBAL] as HostFs | undefined
  if (!fs) throw new Error('stereos snapshot environment: no host channel (this module runs only in the stereos pool)')
  return fs
}

class StereosSnapshotEnvironment extends VitestSnapshotEnvironment {
  override async saveSnapshotFile(filepath: string, snapshot: string): Promise<void> {
    await super.saveSnapshotFile(filepath, snapshot)
    await host().call({ op: 'write', path: filepath, data: snapshot })
  }

  override async removeSnapshotFile(filepath: string): Promise<void> {
    await super.removeSnapshotFile(filepath)
    await host().call({ op: 'remove', path: filepath })
  }
}

export default new StereosSnapshotEnvironment()
