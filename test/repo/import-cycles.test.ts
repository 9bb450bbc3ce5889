import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, relative, resolve } from 'node:path'
import ts from 'typescript'
import { describe, expect, test } from 'vitest'

const repo = resolve(import.meta.dirname, '..', '..')

/** Every .ts file under packages/<name>/src (what ships). */
function sourceFiles(): string[] {
  const out: string[] = []
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name)
      if (entry.isDirectory()) walk(path)
      else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts')) out.push(path)
    }
  }
  for (const pkg of readdirSync(join(repo, 'packages'))) walk(join(repo, 'packages', pkg, 'src'))
  return out
}

/**
 * The relative modules a file loads when it runs: the static `import`/`export … from` left in
 * TypeScript's own output (imports used only as types are erased, as `tsc` erases them), not
 * `import()` (loaded later, the usual way to break a circle on purpose).
 */
function runtimeImports(file: string): string[] {
  const js = ts.transpileModule(readFileSync(file, 'utf8'), {
    compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2023 },
  }).outputText
  const out: string[] = []
  for (const node of ts.createSourceFile(file, js, ts.ScriptTarget.Latest, false).statements) {
    const spec = ts.isImportDeclaration(node) || ts.isExportDeclaration(node) ? node.moduleSpecifier : undefined
    if (spec && ts.isStringLiteral(spec) && spec.text.startsWith('.')) out.push(resolve(dirname(file), spec.text.replace(/\.js$/, '.ts')))
  }
  return out
}

/** Import circles (each as a path that ends where it starts), found by depth-first search. */
function importCircles(files: string[]): string[][] {
  const graph = new Map(files.map((f) => [f, runtimeImports(f).filter((to) => files.includes(to))]))
  const state = new Map<string, 'open' | 'done'>()
  const stack: string[] = []
  const circles: string[][] = []
  const visit = (file: string) => {
    state.set(file, 'open')
    stack.push(file)
    for (const to of graph.get(file) ?? []) {
      if (state.get(to) === 'open') circles.push([...stack.slice(stack.indexOf(to)), to])
      else if (!state.has(to)) visit(to)
    }
    stack.pop()
    state.set(file, 'done')
  }
  for (const file of files) if (!state.has(file)) visit(file)
  return circles.map((circle) => circle.map((f) => relative(repo, f)))
}

describe('packages/ source files', () => {
  test('the search finds a circle, and ignores type-only imports and import()', () => {
    const dir = mkdtempSync(join(tmpdir(), 'sh-cycles-'))
    try {
      const write = (name: string, text: string) => writeFileSync(join(dir, name), text)
      write('a.ts', "import { b } from './b.js'\nexport const a = () => b\n")
      write('b.ts', "import { a } from './a.js'\nexport const b = () => a\n")
      write('c.ts', "import type { D } from './d.js'\nimport { E } from './d.js'\nexport type C = D | E\n")
      write('d.ts', "export type D = number\nexport type E = string\nexport const load = () => import('./c.js')\nexport { type C } from './c.js'\n")
      const circles = importCircles(['a.ts', 'b.ts', 'c.ts', 'd.ts'].map((f) => join(dir, f)))
      expect(circles.map((circle) => circle.map((f) => f.split('/').at(-1)))).toEqual([['a.ts', 'b.ts', 'a.ts']])
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  test('import no circle at run time (type-only imports and import() aside)', () => {
    expect(importCircles(sourceFiles())).toEqual([])
  })
})
