import { readFileSync } from 'node:fs'
import { extname } from 'node:path'
import { HarnessError } from '@stereos/harness'
import * as vite from 'vite'

/**
 * Reads the options of `describe.sandbox(name, { ... }, fn)` from a test file's source, on the
 * host, before the file is scheduled: the pool must pick (or boot) a VM with those options before
 * the guest ever sees the file. The file is parsed with Vite's own parser (TypeScript included);
 * only literals count (strings, numbers, booleans, null, arrays, objects, `as`/`satisfies`
 * casts). Anything else is an error naming the file, line and option: it would otherwise be
 * silently ignored, and the file would run in a VM without what it asked for. `process.env` is
 * refused outright: a test file is untrusted and must not copy host values into its VM (the
 * project's stereos() options do that). Which keys a file may set is suite-options.ts's concern.
 */
export interface FileOptions {
  options: Record<string, unknown>
  /** Line of the describe.sandbox call. */
  line: number
  /** Line of each option in the literal, by path relative to it (`shared`, `network.forwards`, `env.X`, `secrets[0]`). */
  lines: Record<string, number>
}

interface Node {
  type: string
  start: number
  [key: string]: unknown
}

class NotLiteral extends Error {
  constructor(
    readonly at: number,
    readonly path: string,
  ) {
    super(path)
  }
}

/** A value read from the host's environment: `process.env`, `process.env.NAME`, `process.env[...]`. */
class FromHostEnv extends Error {
  constructor(
    readonly at: number,
    readonly path: string,
    readonly variable: string,
  ) {
    super(path)
  }
}

function isNode(value: unknown): value is Node {
  return typeof value === 'object' && value !== null && typeof (value as Node).type === 'string'
}

function keyOf(property: Node): string | undefined {
  if (property.computed) return undefined
  const key = property.key as Node
  if (key.type === 'Identifier') return key.name as string
  if (key.type === 'Literal' && (typeof key.value === 'string' || typeof key.value === 'number')) return String(key.value)
  return undefined
}

function isProcessEnv(node: Node): boolean {
  if (node.type !== 'MemberExpression') return false
  const object = node.object as Node
  const property = node.property as Node
  if (object.type !== 'Identifier' || object.name !== 'process') return false
  return node.computed ? property.type === 'Literal' && property.value === 'env' : property.name === 'env'
}

/** `process.env` (`*`), `process.env.NAME` / `process.env['NAME']` (the name), `process.env[x]` (`[…]`); else undefined. */
function envReference(node: Node): string | undefined {
  if (isProcessEnv(node)) return '*'
  if (node.type !== 'MemberExpression' || !isProcessEnv(node.object as Node)) return undefined
  const property = node.property as Node
  if (!node.computed && property.type === 'Identifier') return property.name as string
  if (node.computed && property.type === 'Literal' && typeof property.value === 'string') return property.value
  return '[…]'
}

function literal(node: Node, path: string, spots: Map<string, number>): unknown {
  spots.set(path, node.start)
  switch (node.type) {
    case 'Literal':
      if (node.value === null || ['string', 'number', 'boolean'].includes(typeof node.value)) return node.value
      break
    case 'TemplateLiteral':
      if ((node.expressions as unknown[]).length === 0) {
        const [quasi] = node.quasis as Node[]
        return quasi ? (quasi.value as { cooked: string }).cooked : ''
      }
      break
    case 'UnaryExpression':
      if (node.operator === '-' && (node.argument as Node).type === 'Literal' && typeof (node.argument as Node).value === 'number')
        return -((node.argument as Node).value as number)
      break
    case 'TSAsExpression':
    case 'TSSatisfiesExpression':
    case 'TSNonNullExpression':
    case 'ParenthesizedExpression':
      return literal(node.expression as Node, path, spots)
    case 'ArrayExpression':
      return (node.elements as (Node | null)[]).map((element, i) => {
        if (!element || element.type === 'SpreadElement') throw new NotLiteral(element?.start ?? node.start, `${path}[${i}]`)
        return literal(element, `${path}[${i}]`, spots)
      })
    case 'ObjectExpression': {
      const out: Record<string, unknown> = {}
      for (const property of node.properties as Node[]) {
        const key = property.type === 'Property' && !property.method && property.kind === 'init' ? keyOf(property) : undefined
        if (key === undefined) throw new NotLiteral(property.start, `${path}.<${property.type === 'SpreadElement' ? 'spread' : 'computed key'}>`)
        out[key] = literal(property.value as Node, `${path}.${key}`, spots)
        // The key's line, not its value's: `shared:` is where the reader looks.
        spots.set(`${path}.${key}`, property.start)
      }
      return out
    }
  }
  // `process.env.X`, `process.env.X ?? 'x'`, `${process.env.X}`: named as what it is.
  for (const inner of walk(node)) {
    const variable = envReference(inner)
    if (variable !== undefined) throw new FromHostEnv(inner.start, path, variable)
  }
  throw new NotLiteral(node.start, path)
}

function isSandboxCall(node: Node): boolean {
  if (node.type !== 'CallExpression') return false
  const callee = node.callee as Node
  return (
    callee.type === 'MemberExpression' &&
    !callee.computed &&
    (callee.property as Node).name === 'sandbox' &&
    (callee.object as Node).type === 'Identifier' &&
    ['describe', 'suite'].includes((callee.object as Node).name as string)
  )
}

function* walk(node: unknown): Generator<Node> {
  if (Array.isArray(node)) {
    for (const child of node) yield* walk(child)
    return
  }
  if (!isNode(node)) return
  yield node
  for (const [key, value] of Object.entries(node)) if (key !== 'parent' && typeof value === 'object' && value !== null) yield* walk(value)
}

function lineAt(source: string, offset: number): number {
  let line = 1
  for (let i = 0; i < offset && i < source.length; i++) if (source.charCodeAt(i) === 10) line++
  return line
}

function lang(file: string): 'ts' | 'tsx' | 'js' | 'jsx' {
  const ext = extname(file)
  if (ext === '.tsx') return 'tsx'
  if (ext === '.jsx') return 'jsx'
  return ['.ts', '.mts', '.cts'].includes(ext) ? 'ts' : 'js'
}

function parse(source: string, file: string): Node {
  // Vite 8 parses TypeScript itself (oxc); an older Vite's parser (rollup's) reads only JavaScript.
  const parseAst = vite.parseAst as unknown as (code: string, options?: Record<string, unknown>, filename?: string) => Node
  try {
    return parseAst(source, { lang: lang(file), sourceType: 'module' }, file)
  } catch (err) {
    throw new HarnessError('INVALID_OPTIONS', `cannot parse ${file} to read its describe.sandbox options: ${(err as Error).message}`, {
      fix: 'fix the syntax error; with TypeScript test files and a Vite older than 8 (whose parser reads only JavaScript), upgrade Vite or set these options in stereos()',
    })
  }
}

function relative(path: string): string {
  return path.replace(/^describe\.sandbox\.?/, '')
}

/** The literal describe.sandbox options in a file, in source order; a file without any has none. */
export function sandboxOptionsInFile(file: string): FileOptions[] {
  let source: string
  try {
    source = readFileSync(file, 'utf8')
  } catch {
    return []
  }
  if (!source.includes('.sandbox')) return []
  const found: FileOptions[] = []
  for (const node of walk(parse(source, file))) {
    if (!isSandboxCall(node)) continue
    const [, options] = node.arguments as (Node | undefined)[]
    const line = lineAt(source, node.start)
    if (!options || ['ArrowFunctionExpression', 'FunctionExpression'].includes(options.type)) continue
    const spots = new Map<string, number>()
    try {
      const value = literal(options, 'describe.sandbox', spots)
      if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new NotLiteral(options.start, 'describe.sandbox')
      const lines: Record<string, number> = {}
      for (const [path, at] of spots) if (relative(path)) lines[relative(path)] = lineAt(source, at)
      found.push({ options: value as Record<string, unknown>, line, lines })
    } catch (err) {
      if (err instanceof FromHostEnv) throw fromHostEnv(`${file}:${lineAt(source, err.at)}`, relative(err.path), err.variable)
      if (!(err instanceof NotLiteral)) throw err
      throw new HarnessError(
        'INVALID_OPTIONS',
        `${file}:${lineAt(source, err.at)}: the describe.sandbox option ${relative(err.path) || '(the whole object)'} is not a literal, so the pool cannot read it before the file runs in its VM`,
        {
          fix: "write it as a literal (strings, numbers, booleans, arrays, objects); values computed or read on the host belong in the project's stereos() options in vitest.config",
        },
      )
    }
  }
  return found
}

function fromHostEnv(at: string, option: string, variable: string): HarnessError {
  const name =
    option
      .split('.')
      .pop()
      ?.replace(/\[\d+\]$/, '') || variable
  const value = /^[A-Za-z_]\w*$/.test(variable) ? `process.env.${variable}` : 'process.env…'
  return new HarnessError(
    'INVALID_OPTIONS',
    `${at}: describe.sandbox option ${option || '(the whole object)'} reads ${value}: a test file may not copy host values into its VM (test files are untrusted; the project's config is trusted)`,
    {
      fix: `read it in the project's stereos() options in vitest.config instead: stereos({ env: { ${name}: ${value} } }) for a variable, or stereos({ secrets: { ${name}: ${value} } }) for a secret, named in the file as describe.sandbox(name, { secrets: ['${name}'] }, fn)`,
    },
  )
}
