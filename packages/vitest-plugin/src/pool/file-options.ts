import { readFileSync } from 'node:fs'
import { extname } from 'node:path'
import { HarnessError } from '@stereos/harness'
import * as vite from 'vite'

/**
 * Reads the options of `describe.sandbox(name, { ... }, fn)` from a test file's source, on the
 * host, before the file is scheduled: the pool must pick (or boot) a VM with those options before
 * the guest ever sees the file. The file is parsed with Vite's own parser (TypeScript included);
 * only literals count (strings, numbers, booleans, null, arrays, objects, `as`/`satisfies`
 * casts), plus `process.env.NAME` inside `secrets` and `env`, read from the host's environment.
 * Anything else is an error naming the file, line and option: it would otherwise be silently
 * ignored, and the file would run in a VM without what it asked for.
 */
export interface FileOptions {
  options: Record<string, unknown>
  line: number
}

interface Node {
  type: string
  start: number
  [key: string]: unknown
}

/** Options where a value may come from the host's environment. */
const FROM_ENV = new Set(['secrets', 'env'])

class NotLiteral extends Error {
  constructor(
    readonly at: number,
    readonly path: string,
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

/** `process.env.NAME` / `process.env['NAME']`: the variable's name, else undefined. */
function envReference(node: Node): string | undefined {
  if (node.type !== 'MemberExpression') return undefined
  const object = node.object as Node
  const property = node.property as Node
  if (object.type !== 'MemberExpression' || (object.object as Node).type !== 'Identifier' || (object.object as Node).name !== 'process') return undefined
  if ((object.property as Node).name !== 'env' || object.computed) return undefined
  if (!node.computed && property.type === 'Identifier') return property.name as string
  if (node.computed && property.type === 'Literal' && typeof property.value === 'string') return property.value
  return undefined
}

function literal(node: Node, path: string, env: NodeJS.ProcessEnv): unknown {
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
      return literal(node.expression as Node, path, env)
    case 'ArrayExpression':
      return (node.elements as (Node | null)[]).map((element, i) => {
        if (!element || element.type === 'SpreadElement') throw new NotLiteral(element?.start ?? node.start, `${path}[${i}]`)
        return literal(element, `${path}[${i}]`, env)
      })
    case 'ObjectExpression': {
      const out: Record<string, unknown> = {}
      for (const property of node.properties as Node[]) {
        const key = property.type === 'Property' && !property.method && property.kind === 'init' ? keyOf(property) : undefined
        if (key === undefined) throw new NotLiteral(property.start, `${path}.<${property.type === 'SpreadElement' ? 'spread' : 'computed key'}>`)
        const value = property.value as Node
        const name = envReference(value)
        // Only values directly inside `secrets` or `env` (path `describe.sandbox.secrets`).
        const option = path.replace(/^describe\.sandbox\.?/, '')
        if (name !== undefined && FROM_ENV.has(option)) {
          const fromHost = env[name]
          if (fromHost === undefined) {
            throw new HarnessError('INVALID_OPTIONS', `${path}.${key} reads process.env.${name}, which is not set on the host`, {
              fix: `set ${name} in the environment that runs vitest, or remove ${key} from the describe.sandbox options`,
            })
          }
          out[key] = fromHost
          continue
        }
        out[key] = literal(value, `${path}.${key}`, env)
      }
      return out
    }
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

/** The literal describe.sandbox options in a file, in source order; a file without any has none. */
export function sandboxOptionsInFile(file: string, env: NodeJS.ProcessEnv = process.env): FileOptions[] {
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
    try {
      const value = literal(options, 'describe.sandbox', env)
      if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new NotLiteral(options.start, 'describe.sandbox')
      found.push({ options: value as Record<string, unknown>, line })
    } catch (err) {
      if (!(err instanceof NotLiteral)) {
        if (err instanceof HarnessError) throw new HarnessError(err.code, `${file}:${line}: ${err.message.split('\nFix: ')[0]}`, { fix: err.fix ?? '' })
        throw err
      }
      throw new HarnessError(
        'INVALID_OPTIONS',
        `${file}:${lineAt(source, err.at)}: the describe.sandbox option ${err.path.replace(/^describe\.sandbox\.?/, '') || '(the whole object)'} is not a literal, so the pool cannot read it before the file runs in its VM`,
        {
          fix: "write it as a literal (strings, numbers, booleans, arrays, objects), or read host variables as process.env.NAME inside secrets/env; options computed at run time belong in the project's stereos() options",
        },
      )
    }
  }
  return found
}
