import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, expect, test } from 'vitest'
import { forksAndStereosOnParity } from './pool-run.js'
import { repoRoot, vitestCli } from './support.js'

const dirs: string[] = []
afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true })
})

test('a library-style suite (argv-reading CLI, scratch files, DOM environment, coverage) ends the same way, test by test, under forks and stereos', async () => {
  const { forks, stereos } = await forksAndStereosOnParity('parity', dirs)
  expect(Object.keys(forks.statuses).length, forks.output).toBe(9)
  expect(stereos.statuses, stereos.output).toEqual(forks.statuses)
  // The suite fails on purpose once, and skips and todos stay what they are.
  expect(Object.values(forks.statuses).sort()).toEqual(['failed', 'passed', 'passed', 'passed', 'passed', 'passed', 'passed', 'skipped', 'todo'])
  expect(stereos.coverage).toEqual(forks.coverage)
  expect(stereos.coverage['src/render.ts']).not.toBe(forks.coverage.total)
}, 900_000)

test('a new inline snapshot is written into the test file when Vitest updates new snapshots, under forks and stereos alike', async () => {
  const source = "import { expect, test } from 'vitest'\n\ntest('inline', () => {\n  expect({ answer: 42 }).toMatchInlineSnapshot()\n})\n"
  const written: Record<string, string> = {}
  for (const pool of ['forks', 'stereos']) {
    const project = mkdtempSync(join(repoRoot, 'fixtures', 'projects', `.run-inline-${pool}-`))
    dirs.push(project)
    cpSync(join(repoRoot, 'fixtures', 'projects', 'basic', 'vitest.config.ts'), join(project, 'vitest.config.ts'))
    writeFileSync(join(project, 'inline.test.ts'), source)
    // `--update=new` is what Vitest does outside CI; this suite itself runs with CI set.
    const { code, output } = await vitestCli(project, ['run', `--pool=${pool}`, '--update=new', 'inline.test.ts'])
    expect(code, output).toBe(0)
    written[pool] = readFileSync(join(project, 'inline.test.ts'), 'utf8')
  }
  expect(written.forks).toContain('toMatchInlineSnapshot(`')
  expect(written.forks).toContain('"answer": 42')
  expect(written.stereos).toBe(written.forks)
}, 600_000)
