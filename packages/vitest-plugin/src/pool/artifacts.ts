import { createHash } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import { extname, join } from 'node:path'
import type { Sandbox } from '@stereos/harness'

/** A birpc call frame as Vitest's worker sends it: `{ t: 'q', m, a, i? }`. */
interface BirpcCall {
  t: 'q'
  m: string
  a: unknown[]
  i?: string
}

function isCall(frame: unknown, method: string): frame is BirpcCall {
  return typeof frame === 'object' && frame !== null && (frame as BirpcCall).t === 'q' && (frame as BirpcCall).m === method && Array.isArray((frame as BirpcCall).a)
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
  if (!isCall(frame, 'onTaskArtifactRecord')) return []
  const artifact = frame.a[1] as { annotation?: { attachment?: Attachment }; attachments?: Attachment[] } | undefined
  const all = [artifact?.annotation?.attachment, ...(Array.isArray(artifact?.attachments) ? artifact.attachments : [])]
  return all.filter((a): a is Attachment => typeof a?.path === 'string')
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

/**
 * The annotations a failed test gets: the VM's serial console and QEMU's log (host files,
 * which Vitest copies into its attachments dir) and the boot timeline. As annotations they show
 * in the default reporter's failure block, junit properties and the HTML report.
 */
export function vmLogAnnotations(sandbox: Sandbox): unknown[] {
  const { info, logs } = sandbox
  const timeline = info.timeline.map((e) => `${e.phase} ${e.atMs} ms`).join(', ')
  const annotation = (message: string, attachment?: { path: string; contentType: string }) => ({
    type: 'internal:annotation',
    annotation: { type: 'stereos', message, ...(attachment ? { attachment } : {}) },
  })
  return [
    annotation(`VM ${info.id} serial console (${info.arch}, ${info.accel})`, { path: logs.serial, contentType: 'text/plain' }),
    annotation(`VM ${info.id} qemu.log`, { path: logs.qemu, contentType: 'text/plain' }),
    annotation(`VM ${info.id} boot timeline: ${timeline}`),
  ]
}
