import { isAbsolute, resolve } from 'node:path'
import { HarnessError } from '@stereos/harness'
import { HOST_FS_TAG, type HostFsReply, type HostFsRequest } from '../shared/host-fs.js'
import { attachmentsIn, localizeAttachment } from './artifacts.js'
import type { Call } from './firewall/firewall.js'
import type { PoolVm } from './vm.js'
import { copyCoverageFile, serveHostWrite, type UpdateMode, WriteBudget, type WritePolicy } from './host-writes.js'

export interface BoundaryOptions {
  /** The host dirs the guest sees (module fetches must stay inside them). */
  viewRoots: readonly string[]
  /** The project root, a real path (file snapshots go only under it; relative attachment paths resolve from it). */
  projectRoot: string
  /** Vitest's `snapshotOptions.updateSnapshot` for this project. */
  update: UpdateMode | undefined
  /** Snapshot files Vitest resolved for this worker's own test files (the firewall learns them). */
  snapshotFiles: ReadonlySet<string>
  /** The test files the pool sent this worker (new inline snapshots are written into them). */
  testFiles: ReadonlySet<string>
  /** Where the coverage provider wants each worker's results, when coverage is on. */
  coverageDir: () => string | undefined
  /** Host dir for copies of guest files that tests attach. */
  guestFilesDir: () => string
}

/**
 * Everything that crosses from one guest worker to the host, checked on the way. The guest is
 * untrusted: its module fetches are confined to the project view, its writes to the snapshot and
 * coverage files Vitest asked for, and the files it attaches are read from the guest, bounded.
 */
export class Boundary {
  private readonly writes: WritePolicy
  /** Everything this worker's guest has had written on the host, bounded. */
  private readonly budget = new WriteBudget()

  constructor(private readonly options: BoundaryOptions) {
    this.writes = { projectRoot: options.projectRoot, update: options.update ?? 'new', snapshotFiles: options.snapshotFiles, testFiles: options.testFiles }
  }

  /** The guest's snapshot write or removal, carried out on the host if allowed; the reply says why not. */
  async hostWrite(message: HostFsRequest): Promise<HostFsReply> {
    const reply: HostFsReply = { [HOST_FS_TAG]: 'reply', id: message.id }
    try {
      const { request } = message
      this.budget.charge(request.path, request.op === 'write' ? Buffer.byteLength(request.data) : 0)
      await serveHostWrite(request, this.writes)
    } catch (err) {
      reply.error = (err as Error).message
    }
    return reply
  }

  /** Attachments name guest files: read them from the guest (bounded), hand Vitest host copies. */
  async readAttachments(message: unknown, vm: Pick<PoolVm, 'readFile'>, maxBytes: number | undefined): Promise<void> {
    for (const attachment of attachmentsIn(message)) {
      const path = attachment.path
      if (typeof path !== 'string') {
        // Inline bodies become files in Vitest's attachments dir: bounded like files read from the guest.
        const size = typeof attachment.body === 'string' ? Buffer.byteLength(attachment.body) : (attachment.body?.byteLength ?? 0)
        if (maxBytes !== undefined && size > maxBytes)
          throw new HarnessError('AGENT', `stereos: an attachment body of ${size} bytes exceeds attachmentMaxBytes (${maxBytes})`, {
            fix: 'attach less, or raise attachmentMaxBytes in the stereos() options of the project config',
          })
        // Vitest writes inline bodies into its attachments dir.
        this.budget.charge('(an inline attachment)', size)
        continue
      }
      const guestPath = isAbsolute(path) ? path : resolve(this.options.projectRoot, path)
      const bytes = await vm.readFile(guestPath, maxBytes === undefined ? {} : { maxBytes }).catch((err: unknown) => {
        throw new HarnessError('AGENT', `stereos: cannot attach ${guestPath}: ${(err as Error).message.split('\n')[0]}`, {
          fix: `attachments are read from the guest (the host's files of the same name are never used), up to attachmentMaxBytes (${maxBytes} bytes) of the stereos() options`,
        })
      })
      this.budget.charge(guestPath, bytes.length * 2) // our copy, and Vitest's copy of it
      localizeAttachment(attachment, bytes, this.options.guestFilesDir())
    }
  }

  /** The coverage results file an `onAfterSuiteRun` call names: copied from the guest to the same host path first. */
  async shipCoverage(call: Call, vm: Pick<PoolVm, 'readFile'>): Promise<void> {
    if (call.m !== 'onAfterSuiteRun') return
    const [meta] = call.a as [{ coverage?: unknown } | undefined]
    if (typeof meta?.coverage !== 'string') return
    await copyCoverageFile(meta.coverage, this.options.coverageDir(), async (path, maxBytes) => {
      const bytes = await vm.readFile(path, { maxBytes })
      this.budget.charge(path, bytes.length)
      return bytes
    })
  }
}
