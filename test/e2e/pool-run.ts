import { readFileSync } from 'node:fs'
import { join, relative } from 'node:path'
import { vitestCli } from './support.js'

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
