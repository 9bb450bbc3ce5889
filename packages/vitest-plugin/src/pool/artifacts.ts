import { createHash } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import { extname, join } from 'node:path'
import { readLogTail } from '@stereos/harness'
import type { PoolVm } from './vm.js'

/** A birpc call frame as Vitest's worker sends it: `{ t: 'q', m, a, i? }`. */
interface BirpcCall {
  t: 'q'
  m: string
  a: unknown[]
  i?: string
}

function isCall(frame: unknown, method: string): frame is BirpcCall {
  return (
    typeof frame === 'object' && frame !== null && (frame as BirpcCall).t === 'q' && (frame as BirpcCall).m === method && Array.isArray((frame as BirpcCall).a)
  )
}

interface Attachment {
  path?: string
  body?: string | Uint8Array
  bodyEncoding?: 'base64' | 'utf-8'
  contentType?: string
}

/**
 * The file attachments of an `onTaskArtifactRecord(testId, artifact)` call. Vitest copies an
 * attachment's `path` on the host, so a path from the guest would attach whatever host file has
 * that name: the pool reads every one from the guest instead and points it at that copy.
 */
export function pathAttachments(frame: unknown): Attachment[] {
  return attachmentsIn(frame).filter((a) => typeof a.path === 'string')
}

/** Every attachment of an `onTaskArtifactRecord` call: by path (read from the guest) or with an inline body. */
export function attachmentsIn(frame: unknown): Attachment[] {
  if (!isCall(frame, 'onTaskArtifactRecord')) return []
  const artifact = frame.a[1] as { annotation?: { attachment?: Attachment }; attachments?: Attachment[] } | undefined
  const all = [artifact?.annotation?.attachment, ...(Array.isArray(artifact?.attachments) ? artifact.attachments : [])]
  return all.filter((a): a is Attachment => typeof a === 'object' && a !== null)
}

/**
 * Point an attachment at a host copy of the guest file, so Vitest copies it into its
 * attachments dir as it does any host file (same name rules, same MIME guess from the extension).
 */
export function localizeAttachment(attachment: Attachment, bytes: Buffer, dir: string): void {
  const path = attachment.path as string
  const copy = join(dir, `${createHash('sha1').update(path).update(bytes).digest('hex')}${extname(path)}`)
  writeFileSync(copy, bytes)
  attachment.path = copy
}

/**
 * Ids of tests an `onTaskUpdate(packs, events)` frame reports as finished and failed. Artifacts
 * must be recorded before that report reaches Vitest, so the pool holds the frame meanwhile.
 */
export function failedTestsIn(frame: unknown): string[] {
  if (!isCall(frame, 'onTaskUpdate')) return []
  const [packs, events] = frame.a as [[string, { state?: string } | undefined, unknown][], [string, string, unknown][]]
  if (!Array.isArray(packs) || !Array.isArray(events)) return []
  const failed = new Set(packs.filter(([, result]) => result?.state === 'fail').map(([id]) => id))
  return events.filter(([id, event]) => event === 'test-finished' && failed.has(id)).map(([id]) => id)
}

/** How much of a VM log travels with a report: the end of a boot and a failure fit; a blob stays small. */
export const LOG_TAIL_BYTES = 256 * 1024

/** The last `max` bytes of a host file (empty when it is missing): a bounded read of its end. */
export function logTail(path: string, max = LOG_TAIL_BYTES): Buffer {
  return readLogTail(path, max)
}

/**
 * The annotations a failed test gets: the end of the VM's serial console, and QEMU's own log
 * when QEMU wrote anything (it is QEMU's stderr: empty unless QEMU warned or failed), as
 * inline bodies, not host paths: a blob report from a shard on another runner carries them
 * into --merge-reports, and the VM dir they came from is gone after the run. Plus the boot
 * timeline. They show in the default reporter's failure block, junit properties and the HTML
 * report.
 */
export function vmLogAnnotations(vm: Pick<PoolVm, 'info' | 'logs'>): unknown[] {
  const { info, logs } = vm
  const timeline = info.timeline.map((e) => `${e.phase} ${e.atMs} ms`).join(', ')
  const annotation = (message: string, attachment?: { body: string; bodyEncoding: 'base64'; contentType: string }) => ({
    type: 'internal:annotation',
    annotation: { type: 'stereos', message, ...(attachment ? { attachment } : {}) },
  })
  const body = (bytes: Buffer) => ({ body: bytes.toString('base64'), bodyEncoding: 'base64' as const, contentType: 'text/plain' })
  const serial = logTail(logs.serial)
  const qemu = logTail(logs.qemu)
  return [
    annotation(
      `VM ${info.id} serial console (${info.arch}, ${info.accel})${serial.length === LOG_TAIL_BYTES ? `, last ${LOG_TAIL_BYTES / 1024} KiB` : ''}`,
      body(serial),
    ),
    ...(qemu.length ? [annotation(`VM ${info.id} qemu.log`, body(qemu))] : []),
    annotation(`VM ${info.id} boot timeline: ${timeline}`),
  ]
}

/**
 * Results in an `onTaskUpdate` frame of suites or files that failed on their own (an import
 * error, a throwing beforeAll): no test carries annotations then, so the VM's account goes
 * with the errors instead. Tests that failed are handled by failedTestsIn.
 */
export function failedSuitesIn(frame: unknown): { errors: unknown[] }[] {
  if (!isCall(frame, 'onTaskUpdate')) return []
  const [packs, events] = frame.a as [[string, { state?: string; errors?: unknown[] } | undefined, unknown][], [string, string, unknown][]]
  if (!Array.isArray(packs) || !Array.isArray(events)) return []
  const suites = new Set(events.filter(([, event]) => event === 'suite-finished' || event === 'suite-failed-early').map(([id]) => id))
  return packs
    .filter(([id, result]) => suites.has(id) && result?.state === 'fail' && Array.isArray(result.errors) && result.errors.length > 0)
    .map(([, result]) => result as { errors: unknown[] })
}

/** The VM's account as one more error of a failed file or suite: its id, where it ran, the end of its console. */
export function vmLogError(vm: Pick<PoolVm, 'info' | 'logs'>): { name: string; message: string; stack: string } {
  const { info, logs } = vm
  const lines = logTail(logs.serial, 16 * 1024)
    .toString('utf8')
    .trimEnd()
    .split('\n')
    .slice(-20)
    .join('\n')
  const message = `this file ran in VM ${info.id} (${info.arch}, ${info.accel}, ${info.mixtape.ref}); last lines of its serial console:\n${lines.replace(/^/gm, '  ')}`
  return { name: 'StereosVmLogs', message, stack: `StereosVmLogs: ${message}` }
}
