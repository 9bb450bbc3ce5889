import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, relative, resolve } from 'node:path'
import ts from 'typescript'
import { describe, expect, test } from 'vitest'
import {
  AGENT_ENTRY,
  BOTH_SIDES,
  GUEST_ENTRIES,
  type GuestEntry,
  type GuestTree,
  moduleSpecifiers,
  walkGuestImports,
} from '../../packages/harness/src/share/guest-code.ts'

const repo = resolve(import.meta.dirname, '..', '..')

const emitted = new Map<string, string>()

/** A .ts file as `tsc` emits it: imports used only as types are erased (the guest never loads them). */
function transpiled(file: string): string {
  const text = readFileSync(file, 'utf8')
  const key = `${file}\0${text}`
  let js = emitted.get(key)
  if (js === undefined) {
    js = ts.transpileModule(text, { compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2023 } }).outputText
    emitted.set(key, js)
  }
  return js
}

function srcTree(root: string): GuestTree {
  return {
    roots: { '@stereos/harness': join(root, 'packages/harness/src'), '@stereos/vitest-plugin': join(root, 'packages/vitest-plugin/src') },
    ext: '.ts',
    javascript: transpiled,
  }
}

/** Each problem as `file: import 'specifier' (reason)`, the file relative to `root`. */
function problems(root: string, tree: GuestTree, entry: GuestEntry): string[] {
  return walkGuestImports(tree, entry).problems.map((p) => `${relative(root, p.file)}: import '${p.specifier}' (${p.reason})`)
}

/** What TypeScript's parser calls the string-literal module specifiers of `js`, to hold the share's lexer to. */
function specifiersByTypeScript(js: string): string[] {
  const out: string[] = []
  const visit = (node: ts.Node) => {
    if ((ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) && node.moduleSpecifier && ts.isStringLiteral(node.moduleSpecifier))
      out.push(node.moduleSpecifier.text)
    if (ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword) {
      const [arg] = node.arguments
      if (arg && (ts.isStringLiteral(arg) || ts.isNoSubstitutionTemplateLiteral(arg))) out.push(arg.text)
    }
    ts.forEachChild(node, visit)
  }
  visit(ts.createSourceFile('module.js', js, ts.ScriptTarget.Latest, true))
  return out
}

describe('guest code', () => {
  test.each(GUEST_ENTRIES.map((entry) => [`${entry.package}/${entry.module}`, entry] as const))(
    '%s imports only node: builtins and code for both sides',
    (_, entry) => {
      const graph = walkGuestImports(srcTree(repo), entry)
      expect(graph.modules.length).toBeGreaterThan(0)
      expect(problems(repo, srcTree(repo), entry)).toEqual([])
    },
  )

  test('the both-sides set names modules and folders that exist', () => {
    const roots = srcTree(repo).roots
    const paths = Object.entries(BOTH_SIDES).flatMap(([pkg, list]) => list.map((path) => join(roots[pkg]!, path.endsWith('/') ? path : `${path}.ts`)))
    expect(paths.filter((path) => !existsSync(path)).map((path) => relative(repo, path))).toEqual([])
  })

  test("the share's import lexer finds what TypeScript finds, in every guest module", () => {
    const files = new Set(GUEST_ENTRIES.flatMap((entry) => walkGuestImports(srcTree(repo), entry).modules.map((m) => m.file)))
    expect(files.size).toBeGreaterThan(10)
    for (const file of files) {
      const js = transpiled(file)
      expect(moduleSpecifiers(js), relative(repo, file)).toEqual(specifiersByTypeScript(js))
    }
  })

  describe('the check, on a made-up tree', () => {
    const withTree = (files: Record<string, string>, run: (root: string) => void) => {
      const root = mkdtempSync(join(tmpdir(), 'sh-guest-imports-'))
      try {
        for (const [name, text] of Object.entries(files)) {
          mkdirSync(dirname(join(root, name)), { recursive: true })
          writeFileSync(join(root, name), text)
        }
        run(root)
      } finally {
        rmSync(root, { recursive: true, force: true })
      }
    }
    const agent = 'packages/harness/src/guest-agent/main.ts'
    const wire = 'packages/harness/src/wire'

    test('names the file and import that leave the both-sides set or use an npm package', () => {
      withTree(
        {
          [agent]: [
            "import { z } from 'zod'",
            "import { readFileSync } from 'fs'",
            "import { peer } from '../wire/peer.js'",
            "import type { Arch } from '../config/options.js'",
            "// import { boot } from '../sandbox/boot.js'",
            'export const run = async (path: string) => [z, readFileSync, peer, await import(path), await import("../vmm/qemu.js")]',
            'export type A = Arch',
          ].join('\n'),
          [`${wire}/peer.ts`]: "import { execa } from '../host/exec.js'\nexport { WireError } from './wire-error.js'\nexport const peer = execa\n",
          [`${wire}/wire-error.ts`]: "import { HarnessError } from '../errors.js'\nexport const WireError = HarnessError\n",
          'packages/harness/src/errors.ts': 'export class HarnessError extends Error {}\n',
          'packages/harness/src/host/exec.ts': 'export const execa = 1\n',
          'packages/harness/src/vmm/qemu.ts': 'export const qemu = 1\n',
        },
        (root) => {
          expect(problems(root, srcTree(root), AGENT_ENTRY)).toEqual([
            `${agent}: import 'zod' (an npm package: the harness share carries no node_modules)`,
            `${agent}: import 'fs' (a builtin without its prefix: import node:fs)`,
            `${wire}/peer.ts: import '../host/exec.js' (@stereos/harness/host/exec is not code for both sides (BOTH_SIDES))`,
            `${agent}: import '../vmm/qemu.js' (@stereos/harness/vmm/qemu is not code for both sides (BOTH_SIDES))`,
          ])
        },
      )
    })

    test("follows a guest entry's allowed package export into its package, and refuses other packages", () => {
      const entry = 'packages/vitest-plugin/src/guest/worker-entry.ts'
      withTree(
        {
          [entry]: "import { encodeV8 } from '@stereos/harness/wire'\nimport { ok } from '../shared/host-fs.js'\nexport default [encodeV8, ok]\n",
          'packages/vitest-plugin/src/shared/host-fs.ts': "import { pool } from '../pool/pool.js'\nexport const ok = pool\n",
          'packages/vitest-plugin/src/pool/pool.ts': 'export const pool = 1\n',
          [`${wire}/index.ts`]: "export { encodeV8 } from '../vmm/v8.js'\nimport 'vitest'\n",
        },
        (root) => {
          const workerEntry = GUEST_ENTRIES.find((e) => e.module === 'guest/worker-entry')!
          expect(problems(root, srcTree(root), workerEntry)).toEqual([
            `${wire}/index.ts: import '../vmm/v8.js' (@stereos/harness/vmm/v8 is not code for both sides (BOTH_SIDES))`,
            `${wire}/index.ts: import 'vitest' (an npm package this guest entry does not allow (allowed: @stereos/harness/wire))`,
            `packages/vitest-plugin/src/shared/host-fs.ts: import '../pool/pool.js' (@stereos/vitest-plugin/pool/pool is not code for both sides (BOTH_SIDES))`,
          ])
        },
      )
    })

    test('on compiled output (what the share copies), lists exactly the modules the entry loads', () => {
      withTree(
        {
          'dist/guest-agent/main.js': "import { a } from './a.js';\nexport { b } from '../wire/b.js';\nconst c = await import(`./c.js`);\n",
          'dist/guest-agent/a.js': "import { HarnessError } from '../errors.js';\nexport const a = 1;\n",
          'dist/guest-agent/unused.js': 'export const unused = 1;\n',
          'dist/wire/b.js': "import { a } from '../guest-agent/a.js';\nexport const b = a;\n",
          'dist/wire/index.js': "export * from './b.js';\n",
          'dist/guest-agent/c.js': 'export {};\n',
          'dist/errors.js': 'export class HarnessError extends Error {}\n',
        },
        (root) => {
          const graph = walkGuestImports({ roots: { '@stereos/harness': join(root, 'dist') }, ext: '.js' }, AGENT_ENTRY)
          expect(graph.problems).toEqual([])
          expect(graph.modules.map((m) => m.module).sort()).toEqual(['errors', 'guest-agent/a', 'guest-agent/c', 'guest-agent/main', 'wire/b'])
        },
      )
    })
  })
})
