import { cpSync, mkdtempSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, relative } from 'node:path'
import { repoRoot, vitestCli } from './support.js'

interface JsonReport {
  testResults: { name: string; assertionResults: { fullName: string; status: string }[] }[]
}

type Summary = Record<string, { lines: { covered: number; total: number } }>

/** vitest run in `cwd` with one pool: per-test statuses and per-file line coverage. */
export async function runWith(
  cwd: string,
  pool: string,
  out: string,
): Promise<{ statuses: Record<string, string>; coverage: Record<string, string>; output: string }> {
  const json = join(out, `${pool}.json`)
  const args = [
    'run',
    `--pool=${pool}`,
    '--reporter=default',
    '--reporter=json',
    `--outputFile.json=${json}`,
    '--coverage',
    `--coverage.reportsDirectory=${join(out, `coverage-${pool}`)}`,
  ]
  const { output } = await vitestCli(cwd, args)
  const report = JSON.parse(readFileSync(json, 'utf8')) as JsonReport
  const statuses = Object.fromEntries(report.testResults.flatMap((f) => f.assertionResults.map((a) => [`${relative(cwd, f.name)} > ${a.fullName}`, a.status])))
  const summary = JSON.parse(readFileSync(join(out, `coverage-${pool}`, 'coverage-summary.json'), 'utf8')) as Summary
  const coverage = Object.fromEntries(
    Object.entries(summary).map(([file, s]) => [file === 'total' ? file : relative(cwd, file), `${s.lines.covered}/${s.lines.total}`]),
  )
  return { statuses, coverage, output }
}

/**
 * A fresh copy of fixtures/projects/parity inside the repo (`.run-*`, as a user's project is),
 * changed by `edit` (given its dir), run under forks and then stereos; both dirs go on `dirs`
 * for the caller to remove.
 */
export async function forksAndStereosOnParity(tag: string, dirs: string[], edit: (project: string) => void = () => undefined) {
  const project = join(repoRoot, 'fixtures', 'projects', `.run-${tag}-${process.pid}-${Date.now()}`)
  cpSync(join(repoRoot, 'fixtures', 'projects', 'parity'), project, { recursive: true })
  const out = mkdtempSync(join(tmpdir(), `stereos-${tag}-`))
  dirs.push(project, out)
  edit(project)
  const forks = await runWith(project, 'forks', out)
  const stereos = await runWith(project, 'stereos', out)
  return { forks, stereos }
}
