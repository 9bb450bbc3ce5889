import { existsSync, readFileSync } from 'node:fs'
import { builtinModules } from 'node:module'
import { dirname, join, relative, resolve, sep } from 'node:path'

/**
 * Which code may run inside the guest, written down once: the harness share copies the agent's
 * import graph from it, and test/repo/guest-imports.test.ts checks every guest entry against it.
 *
 * The guest has Node and nothing else: the share's lib/ carries no node_modules, and the host's
 * code (zod, execa, QEMU and sandbox control, host helpers) must never be pulled into a VM, where
 * it would either fail to load or run host logic beside untrusted tests. So guest code imports
 * only `node:` builtins and the modules below: the wire protocol and errors, which both sides
 * speak, the pool's shared host-fs messages, and the guest entries' own folders.
 *
 * Per package, paths relative to its src/ (and equally its dist/), without extension; one ending
 * in `/` is a whole folder.
 */
export const BOTH_SIDES: Readonly<Record<string, readonly string[]>> = {
  '@stereos/harness': ['wire/', 'errors', 'guest-agent/'],
  '@stereos/vitest-plugin': ['shared/', 'guest/'],
}

/** A package export guest code may name, by the module it is (only where the entry allows it). */
const PACKAGE_EXPORTS: Readonly<Record<string, { package: string; module: string }>> = {
  '@stereos/harness/wire': { package: '@stereos/harness', module: 'wire/index' },
}

export interface GuestEntry {
  package: string
  module: string
  /**
   * Bare specifiers (a package, or a package export) the entry's graph may import: they resolve
   * in the guest through the project view's node_modules. The agent's share has none.
   */
  packages: readonly string[]
}

/** The guest agent, from the harness share (packages/harness/guest/agent runs lib/agent/main.js). */
export const AGENT_ENTRY: GuestEntry = { package: '@stereos/harness', module: 'guest-agent/main', packages: [] }

/** The modules the guest starts. */
export const GUEST_ENTRIES: readonly GuestEntry[] = [
  AGENT_ENTRY,
  // The pool's worker, from the project view (the agent spawns it beside the tests).
  { package: '@stereos/vitest-plugin', module: 'guest/worker-entry', packages: ['@stereos/harness/wire'] },
  // Vitest loads it in that worker as `snapshotEnvironment`; Vitest itself is what the worker runs.
  { package: '@stereos/vitest-plugin', module: 'guest/snapshot-environment', packages: ['@stereos/harness/wire', 'vitest'] },
]

/** Where a walk finds each package's modules. */
export interface GuestTree {
  /** Each package's module root: its src/ (`ext` '.ts') or its dist/ (`ext` '.js'). */
  roots: Readonly<Record<string, string>>
  ext: '.ts' | '.js'
  /** A module's JavaScript as it runs (imports used only as types erased); default: the file's text. */
  javascript?: (file: string) => string
}

interface GuestModule {
  package: string
  /** Relative to the package's root, without extension (e.g. 'guest-agent/main'). */
  module: string
  file: string
}

interface GuestImportProblem {
  /** The importing file. */
  file: string
  specifier: string
  reason: string
}

export interface GuestGraph {
  /** Every module the entry loads, the entry first. */
  modules: GuestModule[]
  problems: GuestImportProblem[]
}

function isBothSides(pkg: string, module: string): boolean {
  return (BOTH_SIDES[pkg] ?? []).some((path) => (path.endsWith('/') ? module.startsWith(path) : module === path))
}

/** The modules `entry` loads, following string-literal imports (static, re-exports, `import()`) from file to file. */
export function walkGuestImports(tree: GuestTree, entry: GuestEntry): GuestGraph {
  const read = tree.javascript ?? ((file: string) => readFileSync(file, 'utf8'))
  const modules: GuestModule[] = []
  const problems: GuestImportProblem[] = []
  const seen = new Set<string>()
  const visit = (target: GuestModule, from: string, specifier: string) => {
    if (!isBothSides(target.package, target.module)) {
      problems.push({ file: from, specifier, reason: `${target.package}/${target.module} is not code for both sides (BOTH_SIDES)` })
      return
    }
    if (seen.has(target.file)) return
    seen.add(target.file)
    if (!existsSync(target.file)) {
      problems.push({ file: from, specifier, reason: `no such module: ${target.file}` })
      return
    }
    modules.push(target)
    for (const spec of moduleSpecifiers(read(target.file))) {
      if (spec.startsWith('node:')) continue
      if (spec.startsWith('.')) {
        const next = locate(tree, resolve(dirname(target.file), spec.replace(/\.js$/, tree.ext)))
        if (next) visit(next, target.file, spec)
        else problems.push({ file: target.file, specifier: spec, reason: 'leaves the packages' })
        continue
      }
      if (!entry.packages.some((p) => spec === p || spec.startsWith(`${p}/`))) {
        problems.push({ file: target.file, specifier: spec, reason: bareReason(entry, spec) })
        continue
      }
      const exported = PACKAGE_EXPORTS[spec]
      const root = exported && tree.roots[exported.package]
      if (exported && root) visit({ ...exported, file: join(root, exported.module + tree.ext) }, target.file, spec)
    }
  }
  const root = tree.roots[entry.package]
  if (!root) throw new Error(`walkGuestImports: the tree has no root for ${entry.package}`)
  const file = join(root, entry.module + tree.ext)
  visit({ package: entry.package, module: entry.module, file }, file, entry.module)
  return { modules, problems }
}

function bareReason(entry: GuestEntry, spec: string): string {
  if (builtinModules.includes(spec)) return `a builtin without its prefix: import node:${spec}`
  return entry.packages.length === 0
    ? 'an npm package: the harness share carries no node_modules'
    : `an npm package this guest entry does not allow (allowed: ${entry.packages.join(', ')})`
}

function locate(tree: GuestTree, file: string): GuestModule | undefined {
  for (const [pkg, root] of Object.entries(tree.roots)) {
    if (!file.startsWith(root + sep) || !file.endsWith(tree.ext)) continue
    return { package: pkg, module: relative(root, file).slice(0, -tree.ext.length).split(sep).join('/'), file }
  }
  return undefined
}

/**
 * The string-literal module specifiers of an ES module's JavaScript, in order: `import … from`,
 * `import '…'`, `export … from` and `import('…')`. Comments are skipped; an `import()` of a
 * computed value is not a module of the graph (the agent's vsock addon, the worker's Vitest).
 */
export function moduleSpecifiers(js: string): string[] {
  const code = withoutComments(js)
  const found: { at: number; spec: string }[] = []
  const patterns = [
    // Declarations start a line; `[^'"`;]` spans a multi-line `{ … }` but not another statement.
    /^[ \t]*(?:import|export)\b[^'"`;]*?\bfrom\s*(['"])([^'"\n]+)\1/gm,
    /^[ \t]*import\s*(['"])([^'"\n]+)\1/gm,
    /(?<![\w$.])import\s*\(\s*(['"`])([^'"`$\n]+)\1\s*[,)]/g,
  ]
  for (const pattern of patterns) for (const match of code.matchAll(pattern)) found.push({ at: match.index, spec: match[2]! })
  return found.sort((a, b) => a.at - b.at).map((f) => f.spec)
}

/** `js` with its comments blanked (strings and templates kept), so an import named in a comment is not one. */
function withoutComments(js: string): string {
  let out = ''
  let i = 0
  while (i < js.length) {
    const c = js[i]!
    if (c === '/' && js[i + 1] === '/') {
      const end = js.indexOf('\n', i)
      i = end === -1 ? js.length : end
    } else if (c === '/' && js[i + 1] === '*') {
      const end = js.indexOf('*/', i + 2)
      const stop = end === -1 ? js.length : end + 2
      out += js.slice(i, stop).replace(/[^\n]/g, ' ')
      i = stop
    } else if (c === "'" || c === '"' || c === '`') {
      let j = i + 1
      while (j < js.length && js[j] !== c && (c === '`' || js[j] !== '\n')) j += js[j] === '\\' ? 2 : 1
      out += js.slice(i, j + 1)
      i = j + 1
    } else {
      out += c
      i++
    }
  }
  return out
}
