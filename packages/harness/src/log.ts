/**
 * The harness's one logger. Two kinds of output, both on stderr:
 *
 * - `log(line)`: a line for the user (`stereos-harness: …`), always shown. Callers that route
 *   lines elsewhere (the Vitest pool, tests) take a `LogSink` and default to this one.
 * - `debug(namespace)`: developer tracing, off unless `DEBUG` selects the namespace, in the
 *   `debug` package's syntax: `DEBUG=stereos:*`, `DEBUG=stereos:boot,stereos:wire`,
 *   `DEBUG=stereos:*,-stereos:wire`. Namespaces: `stereos:boot` (boot phases with timings),
 *   `stereos:control` (stereosd requests/replies: type and size), `stereos:wire` (agent frames:
 *   type, channel, size). Payloads are never traced: they carry secrets and the agent token.
 */

/** Where user-facing log lines go. */
export type LogSink = (line: string) => void

export const LOG_PREFIX = 'stereos-harness: '

/** The default sink: one prefixed line on stderr. */
export const log: LogSink = (line) => {
  process.stderr.write(`${LOG_PREFIX}${line}\n`)
}

export interface Debug {
  (message: string): void
  readonly namespace: string
  /** Whether DEBUG selects this namespace now (re-read when process.env.DEBUG changes). */
  readonly enabled: boolean
}

/** The patterns in a DEBUG value; `-` marks an exclusion, `*` matches any run of characters. */
interface Selection {
  include: RegExp[]
  exclude: RegExp[]
}

function parseSelection(value: string): Selection {
  const selection: Selection = { include: [], exclude: [] }
  for (const raw of value.split(/[\s,]+/)) {
    if (!raw) continue
    const negated = raw.startsWith('-')
    const pattern = negated ? raw.slice(1) : raw
    const regex = new RegExp(`^${pattern.split('*').map(escapeRegex).join('.*')}$`)
    ;(negated ? selection.exclude : selection.include).push(regex)
  }
  return selection
}

function escapeRegex(text: string): string {
  return text.replace(/[.+?^${}()|[\]\\]/g, '\\$&')
}

/** Whether a DEBUG value selects `namespace` (exclusions win, as in the `debug` package). */
export function debugSelects(value: string | undefined, namespace: string): boolean {
  if (!value) return false
  const { include, exclude } = parseSelection(value)
  return !exclude.some((r) => r.test(namespace)) && include.some((r) => r.test(namespace))
}

// The parsed DEBUG value, re-parsed only when the variable changes.
let cached: { value: string | undefined; enabled: Map<string, boolean> } = { value: undefined, enabled: new Map() }

function selected(namespace: string): boolean {
  const value = process.env.DEBUG
  if (value !== cached.value) cached = { value, enabled: new Map() }
  let enabled = cached.enabled.get(namespace)
  if (enabled === undefined) {
    enabled = debugSelects(value, namespace)
    cached.enabled.set(namespace, enabled)
  }
  return enabled
}

/** A tracer for `namespace`; lines read `stereos:boot +12ms message`, the delta since its previous line. */
export function debug(namespace: string, sink: (text: string) => void = (text) => process.stderr.write(text)): Debug {
  let previous: number | undefined
  const trace = (message: string) => {
    if (!selected(namespace)) return
    const now = performance.now()
    const delta = previous === undefined ? 0 : Math.round(now - previous)
    previous = now
    sink(`${namespace} +${delta}ms ${message}\n`)
  }
  return Object.defineProperties(trace, {
    namespace: { value: namespace },
    enabled: { get: () => selected(namespace) },
  }) as Debug
}
