import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { isBuiltin } from 'node:module'
import { tmpdir } from 'node:os'
import { join, relative, resolve } from 'node:path'
import ts from 'typescript'
import { describe, expect, test } from 'vitest'

// A package that imports what its package.json does not declare works here (npm hoists the
// workspace's whole tree to the root) and fails in a user's project, where the package manager
// placed that module elsewhere or (pnpm) nowhere the package can see. knip does not see it
// either without --strict (a workspace may use its ancestors' and its peers' peers' packages).

const repo = resolve(import.meta.dirname, '..', '..')

/** The published packages: what a user installs. */
const PACKAGES = ['native', 'packages/harness', 'packages/vitest-plugin']

interface Manifest {
  name: string
  dependencies?: Record<string, string>
  peerDependencies?: Record<string, string>
  optionalDependencies?: Record<string, string>
}

interface Import {
  file: string
  line: number
  specifier: string
}

/** Every .ts file under <pkg>/src (what dist is built from and what ships). */
function sourceFiles(dir: string): string[] {
  const out: string[] = []
  const walk = (d: string) => {
    for (const entry of readdirSync(d, { withFileTypes: true })) {
      const path = join(d, entry.name)
      if (entry.isDirectory()) walk(path)
      else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts')) out.push(path)
    }
  }
  walk(join(dir, 'src'))
  return out.sort()
}

const literal = (node: ts.Node | undefined): string | undefined => (node && ts.isStringLiteralLike(node) ? node.text : undefined)

const importsOf = new Map<string, Import[]>()

/**
 * The module specifiers a file loads when it runs: static imports and re-exports that TypeScript's
 * own output keeps (type-only ones are erased, as `tsc` erases them), `import('x')`,
 * `require('x')`, `require.resolve('x')` and `import.meta.resolve('x')` with a literal name.
 */
function runtimeImports(file: string): Import[] {
  const cached = importsOf.get(file)
  if (cached) return cached
  const text = readFileSync(file, 'utf8')
  const source = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true)
  const staticSpecs = (statements: readonly ts.Statement[]) =>
    statements.flatMap((node) => {
      const spec = ts.isImportDeclaration(node) || ts.isExportDeclaration(node) ? literal(node.moduleSpecifier) : undefined
      return spec === undefined ? [] : [spec]
    })
  // Transpiling is the slow part: only files with a static import of a package need it.
  const kept = new Set(
    staticSpecs(source.statements).some((spec) => packageOf(spec) !== undefined)
      ? staticSpecs(
          ts.createSourceFile(
            file,
            ts.transpileModule(text, { compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2023 }, fileName: file }).outputText,
            ts.ScriptTarget.Latest,
            false,
          ).statements,
        )
      : staticSpecs(source.statements),
  )
  const out: Import[] = []
  const add = (node: ts.Node, specifier: string | undefined) => {
    if (specifier !== undefined) out.push({ file, line: source.getLineAndCharacterOfPosition(node.getStart()).line + 1, specifier })
  }
  const visit = (node: ts.Node) => {
    if (ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) {
      const spec = literal(node.moduleSpecifier)
      if (spec !== undefined && kept.has(spec)) add(node, spec)
    } else if (ts.isCallExpression(node)) {
      const callee = node.expression
      const isImport = callee.kind === ts.SyntaxKind.ImportKeyword
      const isRequire = ts.isIdentifier(callee) && callee.text === 'require'
      const isResolve =
        ts.isPropertyAccessExpression(callee) &&
        callee.name.text === 'resolve' &&
        ((ts.isIdentifier(callee.expression) && callee.expression.text === 'require') || ts.isMetaProperty(callee.expression))
      if (isImport || isRequire || isResolve) add(node, literal(node.arguments[0]))
    }
    ts.forEachChild(node, visit)
  }
  visit(source)
  importsOf.set(file, out)
  return out
}

/** The package a bare specifier names ('@scope/name/sub' → '@scope/name'); undefined for paths and builtins. */
function packageOf(specifier: string): string | undefined {
  if (/^(\.|\/|#|[a-z]+:)/.test(specifier) || isBuiltin(specifier)) return undefined
  const parts = specifier.split('/')
  return specifier.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0]
}

/**
 * One line per run-time import of a package the manifest does not declare in dependencies,
 * peerDependencies or optionalDependencies (its own name, for self-references and subpath
 * exports, needs no declaration).
 */
function undeclaredImports(dir: string, manifest: Manifest): string[] {
  const declared = new Set([
    manifest.name,
    ...Object.keys(manifest.dependencies ?? {}),
    ...Object.keys(manifest.peerDependencies ?? {}),
    ...Object.keys(manifest.optionalDependencies ?? {}),
  ])
  const out: string[] = []
  for (const file of sourceFiles(dir))
    for (const imp of runtimeImports(file)) {
      const pkg = packageOf(imp.specifier)
      if (pkg && !declared.has(pkg))
        out.push(`${manifest.name}: ${relative(dir, file)}:${imp.line} imports '${imp.specifier}', and ${pkg} is not in its dependencies or peerDependencies`)
    }
  return out
}

/** dependencies that no shipped file loads (build- or test-only packages belong in devDependencies). */
function unusedDependencies(dir: string, manifest: Manifest): string[] {
  const used = new Set(sourceFiles(dir).flatMap((file) => runtimeImports(file).map((imp) => packageOf(imp.specifier))))
  return Object.keys(manifest.dependencies ?? {})
    .filter((dep) => !used.has(dep))
    .map((dep) => `${manifest.name}: ${dep} is in dependencies, and no file under src/ loads it`)
}

const manifestOf = (dir: string): Manifest => JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as Manifest

// Parsing every shipped file takes seconds on a loaded machine.
describe('published packages declare what they import', { timeout: 60_000 }, () => {
  test('the check names the package, file, line and import of an undeclared one, and ignores what needs no declaration', () => {
    const dir = mkdtempSync(join(tmpdir(), 'sh-declared-'))
    try {
      mkdirSync(join(dir, 'src', 'sub'), { recursive: true })
      const write = (name: string, text: string) => writeFileSync(join(dir, 'src', name), text)
      write(
        'a.ts',
        [
          "import { readFileSync } from 'node:fs'",
          "import { join } from 'path'",
          "import type { Plugin } from 'only-types'",
          "import { type Shape, value } from 'declared-dep/deep/path'",
          "import { helper } from './sub/b.js'",
          "import { wire } from '@me/pkg/wire'",
          "import * as vite from 'vite'",
          'export type T = Plugin | Shape',
          'export const x = [readFileSync, join, value, helper, wire, vite]',
          '',
        ].join('\n'),
      )
      write(
        'sub/b.ts',
        [
          "export const helper = () => import('@scope/peer/sub')",
          "export const later = () => import('lazy-undeclared')",
          "export const req = () => require('optional-one')",
          "export const where = () => import.meta.resolve('resolved-undeclared')",
          '',
        ].join('\n'),
      )
      const manifest: Manifest = {
        name: '@me/pkg',
        dependencies: { 'declared-dep': '^1.0.0', 'test-only': '^1.0.0' },
        peerDependencies: { '@scope/peer': '*' },
        optionalDependencies: { 'optional-one': '*' },
      }
      expect(undeclaredImports(dir, manifest)).toEqual([
        "@me/pkg: src/a.ts:7 imports 'vite', and vite is not in its dependencies or peerDependencies",
        "@me/pkg: src/sub/b.ts:2 imports 'lazy-undeclared', and lazy-undeclared is not in its dependencies or peerDependencies",
        "@me/pkg: src/sub/b.ts:4 imports 'resolved-undeclared', and resolved-undeclared is not in its dependencies or peerDependencies",
      ])
      expect(unusedDependencies(dir, manifest)).toEqual(['@me/pkg: test-only is in dependencies, and no file under src/ loads it'])
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  test("the check fails on the plugin's manifest before vite was declared (the import a user's install could not resolve)", () => {
    // packages/vitest-plugin/package.json as of commit 59a7ea0: vitest a peer, vite nowhere.
    const before: Manifest = {
      name: '@stereos/vitest-plugin',
      peerDependencies: { vitest: '^4.1.0 || ^5.0.0' },
      dependencies: { '@stereos/harness': '0.1.0', zod: '4.6.7' },
    }
    const problems = undeclaredImports(join(repo, 'packages/vitest-plugin'), before)
    expect(problems.length).toBeGreaterThan(0)
    expect(problems.every((line) => line.includes("imports 'vite', and vite is not in"))).toBe(true)
    expect(problems.join('\n')).toMatch(/^@stereos\/vitest-plugin: src\/pool\/file-options\.ts:\d+ imports 'vite'/m)
  })

  test.each(PACKAGES)('%s: every run-time import is in dependencies or peerDependencies', (pkg) => {
    const dir = join(repo, pkg)
    expect(undeclaredImports(dir, manifestOf(dir))).toEqual([])
  })

  test.each(PACKAGES)('%s: every dependency is loaded by a shipped file', (pkg) => {
    const dir = join(repo, pkg)
    expect(unusedDependencies(dir, manifestOf(dir))).toEqual([])
  })

  test.each(PACKAGES)('%s: dependencies and peers are version ranges, not exact pins', (pkg) => {
    const manifest = manifestOf(join(repo, pkg))
    const specs = Object.entries({ ...manifest.dependencies, ...manifest.peerDependencies })
    expect(specs.filter(([, range]) => /^\d/.test(range)).map(([name, range]) => `${name}@${range}`)).toEqual([])
  })
})
