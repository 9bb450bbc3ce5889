import { isAbsolute, resolve } from 'node:path'
import { HarnessError, type Sandbox } from '@stereos/harness'
import { HOST_FS_TAG, type HostFsReply, type HostFsRequest } from '../shared/host-fs.js'
import { localizeAttachment, pathAttachments } from './artifacts.js'
import { CONFINED_METHODS, outsideView } from './confine.js'
import { copyCoverageFile, serveHostWrite, type UpdateMode, type WritePolicy } from './host-writes.js'

/** A birpc frame: calls `{ t: 'q', m, a, i? }`, replies `{ t: 's', i, r?, e? }`. */
export interface Frame {
  t?: string
  m?: string
  a?: unknown[]
  i?: string
  r?: unknown
  e?: unknown
}

export interface BoundaryOptions {
  /** The host dirs the guest sees (module fetches must stay inside them). */
  viewRoots: readonly string[]
  /** The project root, a real path (file snapshots go only under it; relative attachment paths resolve from it). */
  projectRoot: string
  /** Vitest's `snapshotOptions.updateSnapshot` for this project. */
  update: UpdateMode | undefined
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
  /** Guest calls whose replies are checked, by birpc id → method. */
  private readonly watched = new Map<string, string>()
  private readonly writes: WritePolicy

  constructor(private readonly options: BoundaryOptions) {
    this.writes = { projectRoot: options.projectRoot, update: options.update ?? 'new', snapshotFiles: new Set() }
  }

  /** A call from the guest: remember it when its reply must be checked (module fetches, snapshot paths). */
  watch(frame: Frame): void {
    if (frame.t === 'q' && typeof frame.i === 'string' && typeof frame.m === 'string' && (CONFINED_METHODS.has(frame.m) || frame.m === 'resolveSnapshotPath')) {
      this.watched.set(frame.i, frame.m)
    }
  }

  /** A reply from Vitest to a watched guest call: confine module files (in place), learn snapshot paths. */
  checkReply(frame: Frame): void {
    const method = this.watched.get(frame.i as string)
    if (!method) return
    this.watched.delete(frame.i as string)
    if (method === 'resolveSnapshotPath') {
      if (typeof frame.r === 'string') this.writes.snapshotFiles.add(resolve(frame.r))
      return
    }
    const outside = frame.e === undefined ? outsideView(frame.r, this.options.viewRoots) : undefined
    if (outside) {
      delete frame.r
      frame.e = new HarnessError('INVALID_OPTIONS', `stereos: ${outside} is outside the project view, so the guest may not import it (${method})`, {
        fix: `the guest sees only ${this.options.viewRoots.join(', ')}; move the file into the project, or import it from a package installed there`,
      })
    }
  }

  /** The guest's snapshot write or removal, carried out on the host if allowed; the reply says why not. */
  async hostWrite(message: HostFsRequest): Promise<HostFsReply> {
    const reply: HostFsReply = { [HOST_FS_TAG]: 'reply', id: message.id }
    try {
      await serveHostWrite(message.request, this.writes)
    } catch (err) {
      reply.error = (err as Error).message
    }
    return reply
  }

  /** Attachments name guest files: read them from the guest (bounded), hand Vitest host copies. */
  async readAttachments(message: unknown, sandbox: Sandbox, maxBytes: number | undefined): Promise<void> {
    for (const attachment of pathAttachments(message)) {
      const path = attachment.path as string
      const guestPath = isAbsolute(path) ? path : resolve(this.options.projectRoot, path)
      const bytes = await sandbox.readFile(guestPath, maxBytes === undefined ? {} : { maxBytes }).catch((err: unknown) => {
        throw new HarnessError('AGENT', `stereos: cannot attach ${guestPath}: ${(err as Error).message.split('\n')[0]}`, {
          fix: `attachments are read from the guest (the host's files of the same name are never used), up to attachmentMaxBytes (${maxBytes} bytes) of the stereos() options`,
        })
      })
      localizeAttachment(attachment, bytes, this.options.guestFilesDir())
    }
  }

  /** The coverage results file an `onAfterSuiteRun` call names: copied from the guest to the same host path first. */
  async shipCoverage(frame: Frame, sandbox: Sandbox): Promise<void> {
    if (frame.t !== 'q' || frame.m !== 'onAfterSuiteRun') return
    const [meta] = (frame.a ?? []) as [{ coverage?: unknown } | undefined]
    if (typeof meta?.coverage !== 'string') return
    await copyCoverageFile(meta.coverage, this.options.coverageDir(), (path, maxBytes) => sandbox.readFile(path, { maxBytes }))
  }
}
