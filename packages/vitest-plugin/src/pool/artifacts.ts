import { createHash } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import { extname, join } from 'node:path'
import { type GatheredLog, lastLines } from './guest-log.js'
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

/** How a failure's guest output is named in the terminal: where the whole excerpt is, then the last lines of each part. */
function fileLogSummary(vm: Pick<PoolVm, 'info'>, log: GatheredLog): string {
  const { info } = vm
  const where = log.path ? `in ${log.path}` : '(attached to the report)'
  // Indented under the reporter's `↳` line.
  const body = log.parts.length ? `; last lines:\n${lastLines(log.parts).replace(/^/gm, '    ')}` : '; it printed nothing'
  return `VM ${info.id} (${info.arch}, ${info.accel}, ${info.mixtape.ref}): what the guest printed while this file ran, ${Buffer.byteLength(log.text)} bytes ${where}${body}`
}

/**
 * The annotations a failed test gets: what the guest printed while its file ran (serial
 * console, journal or kernel messages, the worker's stderr, qemu.log; bounded), with the path
 * of its host copy and its last lines in the message (the default reporter prints it, junit
 * writes it as a property), and the whole as an inline body, not a host path: a blob report
 * from a shard on another runner carries it into --merge-reports, and the HTML report shows it.
 * Plus the boot timeline.
 */
export function vmLogAnnotations(vm: Pick<PoolVm, 'info'>, log: GatheredLog): unknown[] {
  const { info } = vm
  const timeline = info.timeline.map((e) => `${e.phase} ${e.atMs} ms`).join(', ')
  const annotation = (message: string, attachment?: { body: string; bodyEncoding: 'base64'; contentType: string }) => ({
    type: 'internal:annotation',
    annotation: { type: 'stereos', message, ...(attachment ? { attachment } : {}) },
  })
  return [
    annotation(fileLogSummary(vm, log), { body: Buffer.from(log.text).toString('base64'), bodyEncoding: 'base64', contentType: 'text/plain' }),
    annotation(`VM ${info.id} boot timeline: ${timeline}`),
  ]
}

/**
 * What the JSON reporter gets: it writes each test's `meta` but no annotations, so a failed
 * test's meta carries the excerpt's path and its last lines under `stereosVmLog`.
 */
export function vmLogMeta(
  vm: Pick<PoolVm, 'info'>,
  log: GatheredLog,
): { stereosVmLog: { vm: string; path: string | undefined; bytes: number; lastLines: string } } {
  return { stereosVmLog: { vm: vm.info.id, path: log.path, bytes: Buffer.byteLength(log.text), lastLines: lastLines(log.parts) } }
}

/** Give the failed tests of an `onTaskUpdate` frame the excerpt in their meta (see vmLogMeta). */
export function addVmLogMeta(frame: unknown, ids: string[], meta: Record<string, unknown>): void {
  if (!isCall(frame, 'onTaskUpdate')) return
  const packs = frame.a[0] as [string, unknown, Record<string, unknown> | undefined][]
  if (!Array.isArray(packs)) return
  for (const pack of packs)
    if (Array.isArray(pack) && ids.includes(pack[0])) pack[2] = { ...(typeof pack[2] === 'object' && pack[2] !== null ? pack[2] : {}), ...meta }
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

/** The VM's account as one more error of a failed file or suite: its id, where it ran, what the guest printed meanwhile. */
export function vmLogError(vm: Pick<PoolVm, 'info'>, log: GatheredLog): { name: string; message: string; stack: string } {
  const message = fileLogSummary(vm, log).replace(/\n/g, '\n  ')
  return { name: 'StereosVmLogs', message, stack: `StereosVmLogs: ${message}` }
}

/** A failed test's meta names where its VM is captured (capture 'on-failure'): the JSON reporter writes meta, not annotations. */
export function addCaptureMeta(frame: unknown, ids: string[], path: string): void {
  addVmLogMeta(frame, ids, { stereosCapture: { path } })
}
