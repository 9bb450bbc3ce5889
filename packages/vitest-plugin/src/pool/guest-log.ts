import { createHash } from 'node:crypto'
import { closeSync, fstatSync, mkdirSync, openSync, readSync, statSync, writeFileSync } from 'node:fs'
import { basename, join } from 'node:path'
import type { PoolVm } from './vm.js'

/**
 * What the guest printed while one test file ran, for that file's failure report: the slice of
 * the VM's serial console and qemu.log written since the file started, the guest's journal (or
 * kernel ring buffer) for that interval, and the guest worker's stderr. Bounded: each part is
 * the end of what was printed, and the whole is at most FILE_LOG_BYTES.
 */
export const FILE_LOG_BYTES = 64 * 1024

/** Each part's share of FILE_LOG_BYTES (the console and the journal carry most of a crash). */
const PART_BYTES = { serial: 24 * 1024, journal: 22 * 1024, stderr: 14 * 1024, qemu: 4 * 1024 } as const

/** How many times one file's failures read the guest's journal (each read is a guest exec). */
const MAX_JOURNAL_READS = 3

/** Where the VM's host logs were when a file started running, and when. */
export interface LogMark {
  serial: number
  qemu: number
  atMs: number
}

function sizeOf(path: string): number {
  try {
    return statSync(path).size
  } catch {
    return 0
  }
}

function markLogs(logs: { serial: string; qemu: string }, atMs = Date.now()): LogMark {
  return { serial: sizeOf(logs.serial), qemu: sizeOf(logs.qemu), atMs }
}

export interface LogSlice {
  bytes: Buffer
  /** Bytes written since `from` that were left out (only the end is kept). */
  skipped: number
  /** The log was cut (the size cap) below `from` meanwhile: `bytes` is its end, from wherever. */
  cut: boolean
}

/** The bytes a host log gained since offset `from`, at most `max` of them (the end). */
export function readLogSince(path: string, from: number, max: number): LogSlice {
  let fd: number
  try {
    fd = openSync(path, 'r')
  } catch {
    return { bytes: Buffer.alloc(0), skipped: 0, cut: false }
  }
  try {
    const size = fstatSync(fd).size
    const cut = size < from
    const begin = cut ? Math.max(0, size - max) : Math.max(from, size - max)
    const bytes = Buffer.alloc(size - begin)
    let read = 0
    while (read < bytes.length) {
      const n = readSync(fd, bytes, read, bytes.length - read, begin + read)
      if (n === 0) break
      read += n
    }
    return { bytes: bytes.subarray(0, read), skipped: cut ? 0 : begin - from, cut }
  } finally {
    closeSync(fd)
  }
}

/** The last `max` bytes of a stream (a guest worker's stderr), and how many it carried in all. */
export class OutputTail {
  private chunks: Buffer[] = []
  private size = 0
  total = 0

  constructor(private readonly max: number) {}

  push(chunk: Buffer | string): void {
    const b = typeof chunk === 'string' ? Buffer.from(chunk) : chunk
    this.chunks.push(b.length > this.max ? b.subarray(b.length - this.max) : b)
    this.size += Math.min(b.length, this.max)
    this.total += b.length
    while (this.chunks.length > 1 && this.size - (this.chunks[0]?.length ?? 0) >= this.max) this.size -= this.chunks.shift()?.length ?? 0
  }

  reset(): void {
    this.chunks = []
    this.size = 0
    this.total = 0
  }

  bytes(): Buffer {
    const all = Buffer.concat(this.chunks)
    return all.subarray(Math.max(0, all.length - this.max))
  }
}

/**
 * The guest's journal for the last `seconds` (services and kernel), or its kernel ring buffer
 * where there is no journal, the last `max` bytes, as root (dmesg may be root's only).
 */
const JOURNAL_SCRIPT = `s=$1; n=$2
if command -v journalctl >/dev/null 2>&1; then
  out=$(journalctl --no-pager -q -o short-monotonic --since "-\${s}s" 2>/dev/null | tail -c "$n")
  if [ -n "$out" ]; then printf '%s\\n' "$out"; exit 0; fi
fi
up=$(cut -d' ' -f1 /proc/uptime)
dmesg 2>/dev/null | awk -v up="$up" -v s="$s" 'BEGIN { since = up - s } { t = $0; sub(/^\\[ */, "", t); sub(/\\].*/, "", t); if (t + 0 >= since) print }' | tail -c "$n"`

async function readGuestJournal(vm: Pick<PoolVm, 'exec'>, seconds: number, max: number = PART_BYTES.journal): Promise<string> {
  const secs = String(Math.max(1, Math.ceil(seconds)))
  const result = await vm.exec('sh', ['-c', JOURNAL_SCRIPT, 'stereos-journal', secs, String(max)], {
    user: 'root',
    timeoutMs: 10_000,
    maxBuffer: 4 * max,
  })
  return result.stdout
}

/** Guest text for a report and a terminal: no control characters but newline and tab (a guest could drive the terminal). */
function printable(text: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: these are what is replaced
  return text.replace(/\r\n/g, '\n').replace(/[\x00-\x08\x0b-\x1f\x7f\x9b]/g, '?')
}

interface FileLogInput {
  vm: Pick<PoolVm, 'info' | 'logs'>
  files: string[]
  mark: LogMark
  stderr: OutputTail
  journal: string | undefined
  nowMs?: number
}

export interface FileLogPart {
  title: string
  text: string
}

/** The excerpt's parts, each bounded and printable; empty parts are left out. */
function fileLogParts(input: FileLogInput): FileLogPart[] {
  const { vm, mark, stderr } = input
  const parts: FileLogPart[] = []
  const slice = (name: 'serial' | 'qemu', path: string, from: number) => {
    const s = readLogSince(path, from, PART_BYTES[name])
    if (!s.bytes.length) return
    const what = name === 'serial' ? 'serial console' : 'qemu.log'
    const note = s.cut ? ' (the log was cut meanwhile: its end)' : s.skipped ? ` (last ${s.bytes.length} of ${s.skipped + s.bytes.length} bytes)` : ''
    parts.push({ title: `${what}${note}`, text: s.bytes.toString('utf8') })
  }
  slice('serial', vm.logs.serial, mark.serial)
  if (input.journal?.trim()) parts.push({ title: 'guest journal / kernel messages', text: input.journal })
  const err = stderr.bytes()
  if (err.length)
    parts.push({ title: `guest worker stderr${stderr.total > err.length ? ` (last ${err.length} of ${stderr.total} bytes)` : ''}`, text: err.toString('utf8') })
  slice('qemu', vm.logs.qemu, mark.qemu)
  return parts.map((p) => ({ title: p.title, text: printable(p.text).trimEnd() }))
}

/** The excerpt as one text: a header, then each part under its title. At most FILE_LOG_BYTES plus headers. */
function fileLogText(input: FileLogInput, parts = fileLogParts(input)): string {
  const { info } = input.vm
  const seconds = Math.round(((input.nowMs ?? Date.now()) - input.mark.atMs) / 100) / 10
  const head = `VM ${info.id} (${info.arch}, ${info.accel}, ${info.mixtape.ref}): what the guest printed while ${input.files.join(', ')} ran (${seconds} s)\n`
  if (!parts.length) return `${head}(nothing)\n`
  return `${head}${parts.map((p) => `\n== ${p.title} ==\n${p.text}\n`).join('')}`
}

/** The last lines of each part, for a terminal: at most `lines` a part, each cut at 240 characters. */
export function lastLines(parts: FileLogPart[], lines = 6): string {
  return parts
    .map((p) => {
      const last = p.text
        .split('\n')
        .slice(-lines)
        .map((l) => (l.length > 240 ? `${l.slice(0, 240)}…` : l))
      return `${p.title}:\n${last.map((l) => `  ${l}`).join('\n')}`
    })
    .join('\n')
}

/** Where a file's excerpt is written on the host: one file per VM and test file, rewritten at each failure. */
export function fileLogPath(dir: string, vmId: string, file: string): string {
  const name = basename(file).replace(/[^A-Za-z0-9._-]/g, '_')
  return join(dir, 'stereos', `${vmId}-${name}-${createHash('sha1').update(file).digest('hex').slice(0, 8)}.log`)
}

function writeFileLog(path: string, text: string): void {
  mkdirSync(join(path, '..'), { recursive: true })
  writeFileSync(path, text)
}

export interface GatheredLog {
  /** The host copy, or undefined when it could not be written. */
  path: string | undefined
  text: string
  parts: FileLogPart[]
}

/** One file's guest output, gathered at each failure in it; the journal is read at most MAX_JOURNAL_READS times. */
export class FileLog {
  private mark: LogMark
  private files: string[]
  private journalReads = 0
  private journal: string | undefined
  readonly stderr = new OutputTail(PART_BYTES.stderr)

  constructor(
    private readonly vm: Pick<PoolVm, 'info' | 'logs' | 'exec'>,
    files: string[],
  ) {
    this.files = files
    this.mark = markLogs(vm.logs)
  }

  /** A file starts on this process (isolate: false hands one process more files): count from here. */
  restart(files: string[]): void {
    this.files = files
    this.mark = markLogs(this.vm.logs)
    this.stderr.reset()
    this.journalReads = 0
    this.journal = undefined
  }

  /** The excerpt now: written to a host file under `dir`, with its text, parts and path. */
  async gather(dir: string): Promise<GatheredLog> {
    if (this.journalReads < MAX_JOURNAL_READS) {
      this.journalReads++
      const seconds = (Date.now() - this.mark.atMs) / 1000 + 1
      this.journal = await readGuestJournal(this.vm, seconds).catch((err: unknown) => `(the guest's journal could not be read: ${(err as Error).message})`)
    }
    const input: FileLogInput = { vm: this.vm, files: this.files, mark: this.mark, stderr: this.stderr, journal: this.journal }
    const parts = fileLogParts(input)
    const text = fileLogText(input, parts)
    const path = fileLogPath(dir, this.vm.info.id, this.files[0] ?? 'file')
    try {
      writeFileLog(path, text)
      return { path, text, parts }
    } catch {
      // The report still carries the text; only the host copy is missing.
      return { path: undefined, text, parts }
    }
  }
}
