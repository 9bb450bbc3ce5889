import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { SandboxOptionsInput } from '@stereos/harness'
import { parseStereosOptions, type ResolvedStereosOptions } from '../options.js'
import { sandboxOptionsInFile } from './file-options.js'
import type { Lease, VmLeasePool } from './lease-pool.js'

/**
 * What every PoolWorker of one project shares: the project's options, the VM pool, and how a
 * test file's describe.sandbox options turn into the VM it runs in.
 */
export class PoolContext {
  private guestFiles: string | undefined

  constructor(
    readonly pool: VmLeasePool,
    private readonly projectOptions: Record<string, unknown>,
    /** Host dir shared read-only at the same guest path (project, Vitest, this plugin). */
    readonly sharedDir: string,
  ) {}

  /** Options for these files: the project's, overridden by literal describe.sandbox options in the first file. */
  resolve(files: string[]): ResolvedStereosOptions {
    const [file] = files
    const inFile = file ? sandboxOptionsInFile(file) : []
    const merged = Object.assign({}, this.projectOptions, ...inFile) as Record<string, unknown>
    return parseStereosOptions(merged, file && inFile.length ? `describe.sandbox options in ${file}` : 'stereos')
  }

  /** A VM for these files; the key includes isolation, so a 'vm' file never takes a VM another file used. */
  async lease(files: string[]): Promise<{ lease: Lease; isolation: ResolvedStereosOptions['isolation'] }> {
    const { isolation, ...sandbox } = this.resolve(files)
    const boot: SandboxOptionsInput = {
      ...sandbox,
      shared: [...sandbox.shared, { host: this.sharedDir, guest: this.sharedDir, readonly: true }],
    }
    return { lease: await this.pool.lease(JSON.stringify({ isolation, boot }), boot), isolation }
  }

  /** Host copies of files tests attached inside the guest (Vitest copies them on from here). */
  guestFilesDir(): string {
    this.guestFiles ??= mkdtempSync(join(tmpdir(), 'stereos-guest-files-'))
    return this.guestFiles
  }

  /** Called when Vitest closes. */
  dispose(): void {
    if (this.guestFiles) rmSync(this.guestFiles, { recursive: true, force: true })
  }
}
