import { lstatSync } from 'node:fs'
import { moduleFile } from '../confine.js'

/** Whether a host path lies inside the project view (after realpath). */
export type InView = (path: string) => boolean

/**
 * Absolute paths and `file://` URLs in a text, where a path can start (line start, space, quote,
 * bracket, `=`), up to a quote, space, bracket or `:line`. `node:internal/…`, `src/a.ts` and
 * `http://…` name no host path; Vite's virtual ids (`/@…`, but `/@fs/…` is a path) neither.
 */
const PATH = /(?<=^|[\s'"`(<[,=])(file:\/\/)?(\/(?!\/)[^\s'"`()<>,;:]*)/g

/** The first host path outside the view that a text names, if any. */
function outsidePathIn(text: unknown, inView: InView): string | undefined {
  if (typeof text !== 'string') return undefined
  for (const match of text.matchAll(PATH)) {
    // The same reading of ids as the fetch checks: `file://` and `/@fs/` unwrapped, queries dropped, `/@…` virtual.
    const path = moduleFile(`${match[1] ?? ''}${match[2]}`)
    if (path && path !== '/' && !inView(path)) return path
  }
  return undefined
}

/** A stack frame line (V8's `at …`, or `…:line:col`): what Vitest parses into code frames and source maps. */
const FRAME = /^\s*at\s|:\d+:\d+\)?\s*$/

/**
 * Stack frames naming a file outside the view lose the name: Vitest reads the file a frame
 * names to print a code frame, or its source map to map the frame, so a frame is a read request.
 */
export function scrubStack(stack: string, inView: InView): string {
  return stack
    .split('\n')
    .map((line) => (FRAME.test(line) && outsidePathIn(line, inView) ? `${/^\s*/.exec(line)?.[0] ?? ''}at <a file outside the project view>` : line))
    .join('\n')
}

const MAX_NODES = 1_000_000
const MAX_DEPTH = 64

/**
 * Scrub, in place, every error-like value in what the guest sends: `stack` strings, Vitest's
 * parsed `stacks` (frames with `file`), and console logs' `origin` traces. Returns false when
 * the value is too large or deep to walk (the caller refuses it).
 */
export function scrubGuestValue(value: unknown, inView: InView): boolean {
  const seen = new Set<object>()
  const walk = (v: unknown, depth: number): boolean => {
    if (typeof v !== 'object' || v === null || seen.has(v)) return true
    if (depth > MAX_DEPTH || seen.size >= MAX_NODES) return false
    seen.add(v)
    if (ArrayBuffer.isView(v)) return true
    const record = v as Record<string, unknown>
    if (!Array.isArray(v)) {
      if (typeof record.stack === 'string') record.stack = scrubStack(record.stack, inView)
      if (typeof record.origin === 'string') record.origin = scrubStack(record.origin, inView)
      if (Array.isArray(record.stacks)) {
        record.stacks = record.stacks.filter((frame: unknown) => {
          const file = (frame as { file?: unknown } | null)?.file
          return outsidePathIn(file, inView) === undefined
        })
      }
    }
    for (const child of Array.isArray(v) ? v : Object.values(record)) if (!walk(child, depth + 1)) return false
    return true
  }
  return walk(value, 0)
}

/**
 * An error Vitest answers a guest call with. Vite's errors quote the file they failed on (a code
 * frame in `message` or `frame`, the id in `id` and `loc`): when any of that names a file outside
 * the view, the guest gets a plain error naming only what it asked for. Otherwise the error
 * goes on, its stack frames scrubbed.
 */
export function scrubHostError(error: unknown, inView: InView, method: string): unknown {
  const e = (typeof error === 'object' && error !== null ? error : { message: String(error) }) as Record<string, unknown>
  const loc = e.loc as { file?: unknown } | undefined
  // A path that is no host file has no contents to give away ("Failed to load url /x.js").
  const harmless = (path: string) => inView(path) || lstatSync(path, { throwIfNoEntry: false }) === undefined
  const named = [e.message, e.frame, e.id, loc?.file].map((v) => outsidePathIn(v, harmless)).find((p) => p !== undefined)
  if (named !== undefined) {
    const plain = new Error(`stereos: ${method} failed on a file outside the project view; its details stay on the host`)
    plain.stack = `Error: ${plain.message}`
    return plain
  }
  if (typeof e.stack === 'string') e.stack = scrubStack(e.stack, inView)
  return e
}
