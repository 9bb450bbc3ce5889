import { readFileSync } from 'node:fs'

/**
 * Reads the literal options of `describe.sandbox(name, { ... }, fn)` from a test file's source,
 * on the host, before the file is scheduled: the pool must pick (or boot) a VM with those
 * options before the guest ever sees the file. Only literals count (strings, numbers, booleans,
 * arrays, nested objects); a computed option is left to the project's options.
 */
export function sandboxOptionsInFile(file: string): Record<string, unknown>[] {
  let source: string
  try {
    source = readFileSync(file, 'utf8')
  } catch {
    return []
  }
  const found: Record<string, unknown>[] = []
  const call = /describe\.sandbox\s*\(\s*(['"`])(?:\\.|(?!\1).)*\1\s*,\s*\{/g
  for (let m = call.exec(source); m; m = call.exec(source)) {
    const start = m.index + m[0].length - 1
    const literal = balanced(source, start)
    if (!literal) continue
    const parsed = parseLiteral(literal)
    if (parsed) found.push(parsed)
  }
  return found
}

function balanced(text: string, open: number): string | undefined {
  let depth = 0
  let quote: string | undefined
  for (let i = open; i < text.length; i++) {
    const c = text[i]
    if (quote) {
      if (c === '\\') i++
      else if (c === quote) quote = undefined
      continue
    }
    if (c === '"' || c === "'" || c === '`') quote = c
    else if (c === '{') depth++
    else if (c === '}' && --depth === 0) return text.slice(open, i + 1)
  }
  return undefined
}

/** A JS object literal of plain values → a value, or undefined when it holds anything else. */
function parseLiteral(literal: string): Record<string, unknown> | undefined {
  const json = literal
    .replace(/\/\/[^\n]*|\/\*[\s\S]*?\*\//g, '')
    .replace(/'((?:\\.|[^'\\])*)'/g, (_, body: string) => JSON.stringify(body.replace(/\\'/g, "'")))
    .replace(/([{,]\s*)([A-Za-z_$][\w$]*)\s*:/g, '$1"$2":')
    .replace(/,\s*([}\]])/g, '$1')
  try {
    const value: unknown = JSON.parse(json)
    return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined
  } catch {
    return undefined
  }
}
