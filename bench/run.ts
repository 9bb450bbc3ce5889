// `npm run bench -- <name> [options] [--json]`: runs bench/<name>.ts. Benchmarks print figures and
// ratios against a baseline measured in the same run; they assert nothing.
import { existsSync, readdirSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import type { Summary } from './stats.ts'

const here = dirname(fileURLToPath(import.meta.url))
const available = readdirSync(here)
  .filter((f) => f.endsWith('.ts') && !['run.ts', 'stats.ts'].includes(f))
  .map((f) => f.slice(0, -3))
const [name, ...args] = process.argv.slice(2)
if (!name || !existsSync(join(here, `${name}.ts`)) || !available.includes(name)) {
  process.stderr.write(`usage: npm run bench -- <${available.join('|')}> [options]\n`)
  process.exit(2)
}
const json = args.includes('--json')
const bench = (await import(pathToFileURL(join(here, `${name}.ts`)).href)) as { main(args: string[]): Promise<Summary> }
const summary = await bench.main(args.filter((a) => a !== '--json'))
// With --json, one JSON object is the last line of the output (scripts and CI read it).
if (json) process.stdout.write(`${JSON.stringify({ bench: name, ...summary })}\n`)
