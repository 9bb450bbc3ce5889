import type { RetryNotice } from './retry.js'

export type PullEvent =
  | { type: 'resolved'; ref: string; digest: string; manifest: string; platform: string; format: string; tier: number; warning: string | undefined }
  | { type: 'up-to-date'; ref: string; dir: string }
  | { type: 'waiting'; what: string }
  | { type: 'layer'; file: string; digest: string; size: number; stored: boolean; resumeFrom: number }
  | { type: 'bytes'; file: string; done: number; size: number }
  | { type: 'layer-done'; file: string; size: number; downloaded: number; ms: number }
  | { type: 'retry'; notice: RetryNotice }
  | { type: 'warning'; message: string }
  | { type: 'installed'; ref: string; dir: string; downloaded: number; ms: number }

export type PullProgress = (event: PullEvent) => void

export function formatBytes(bytes: number): string {
  if (bytes >= 1024 ** 3) return `${(bytes / 1024 ** 3).toFixed(1)} GiB`
  if (bytes >= 1024 ** 2) return `${(bytes / 1024 ** 2).toFixed(1)} MiB`
  if (bytes >= 1024) return `${(bytes / 1024).toFixed(1)} KiB`
  return `${bytes} B`
}

const rate = (bytes: number, ms: number) => (ms > 0 && bytes > 0 ? ` at ${((bytes / 1e6) * (1000 / ms)).toFixed(0)} MB/s` : '')

/** The line for every event but `bytes` (shared by both renderers). */
function describe(event: PullEvent): string | undefined {
  switch (event.type) {
    case 'resolved':
      return `pull ${event.ref}: ${event.digest.slice(0, 19)} → ${event.platform} ${event.format} (${event.manifest.slice(0, 19)})${event.warning ? `\n  warning: ${event.warning}` : ''}`
    case 'up-to-date':
      return `pull ${event.ref}: up to date in ${event.dir}`
    case 'waiting':
      return `  waiting: ${event.what}`
    case 'layer':
      return `  ${event.file} ${formatBytes(event.size)}${event.stored ? ' (in the blob store)' : event.resumeFrom > 0 ? ` (resuming at ${formatBytes(event.resumeFrom)})` : ''}`
    case 'layer-done':
      return `  ${event.file} done${event.downloaded ? `, ${formatBytes(event.downloaded)} downloaded${rate(event.downloaded, event.ms)}` : ''}`
    case 'retry':
      return `  retry ${event.notice.attempt + 1}/${event.notice.attempts} in ${event.notice.delayMs} ms (${event.notice.what}): ${event.notice.reason}`
    case 'warning':
      return `  warning: ${event.message}`
    case 'installed':
      return `pulled ${event.ref} into ${event.dir} (${formatBytes(event.downloaded)} downloaded in ${(event.ms / 1000).toFixed(1)} s)`
    default:
      return undefined
  }
}

/** Plain lines (logs, CI): one per event, and a line per quarter of any blob over 32 MiB. */
export function plainProgress(write: (line: string) => void): PullProgress {
  let quarter = 0
  return (event) => {
    if (event.type === 'bytes') {
      if (event.size < 32 * 1024 ** 2) return
      const q = Math.floor((event.done / event.size) * 4)
      if (q > quarter && q < 4) {
        quarter = q
        write(`  ${event.file} ${q * 25}% (${formatBytes(event.done)} of ${formatBytes(event.size)})`)
      }
      return
    }
    if (event.type === 'layer') quarter = 0
    const line = describe(event)
    if (line) for (const part of line.split('\n')) write(part)
  }
}

/** A redrawn progress bar on a terminal, at most 10 redraws a second. */
export function ttyProgress(stream: NodeJS.WriteStream): PullProgress {
  let drawn = false
  let last = 0
  let started = 0
  const clear = () => {
    if (drawn) stream.write('\r\x1b[K')
    drawn = false
  }
  return (event) => {
    if (event.type === 'bytes') {
      const now = performance.now()
      if (now - last < 100 && event.done < event.size) return
      last = now
      const width = Math.max(10, Math.min(40, (stream.columns ?? 80) - 60))
      const filled = event.size ? Math.round((event.done / event.size) * width) : width
      const pct = event.size ? Math.floor((event.done / event.size) * 100) : 100
      const speed = rate(event.done, now - started)
      stream.write(
        `\r\x1b[K  ${event.file.padEnd(14)} [${'='.repeat(filled)}${' '.repeat(width - filled)}] ${String(pct).padStart(3)}% ${formatBytes(event.done)}/${formatBytes(event.size)}${speed}`,
      )
      drawn = true
      return
    }
    if (event.type === 'layer') started = performance.now()
    clear()
    const line = describe(event)
    if (line) stream.write(`${line}\n`)
  }
}

/** A bar on a terminal, plain lines otherwise. */
export function progressFor(stream: NodeJS.WriteStream): PullProgress {
  return stream.isTTY ? ttyProgress(stream) : plainProgress((line) => stream.write(`${line}\n`))
}
