// `vitest --pool=stereos` (and with --isolate=false, and with isolation: 'vm', a fresh VM per
// file) against `--pool=forks` on the same generated 20-file project, same run:
// wall time of each, time to the first file result, and the per-file cost once VMs are warm,
// against a bare `node -e 1` in the guest. A one-file stereos run first (untimed) saves the VM
// template, so the timed runs measure restores, as every run after a kind's first does.
import { spawn } from 'node:child_process'
import { cpSync, mkdirSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { Sandbox } from '@stereos/harness'
import { median, seconds, type Summary } from './stats.ts'

const repo = join(fileURLToPath(import.meta.url), '..', '..')
const VITEST = join(repo, 'node_modules', 'vitest', 'vitest.mjs')

interface Run {
  wallMs: number
  firstResultMs: number
  /** When each file's result line appeared, ms after start. */
  fileDoneMs: number[]
}

function vitest(cwd: string, pool: string, extra: string[] = []): Promise<Run> {
  return new Promise((resolve, reject) => {
    const started = performance.now()
    const fileDoneMs: number[] = []
    const child = spawn(process.execPath, [VITEST, 'run', `--pool=${pool}`, '--reporter=default', ...extra], {
      cwd,
      env: { ...process.env, NO_COLOR: '1', CI: '1' },
    })
    let buffered = ''
    child.stdout.on('data', (chunk: Buffer) => {
      buffered += chunk.toString()
      const lines = buffered.split('\n')
      buffered = lines.pop() ?? ''
      for (const line of lines) if (/^ [✓×] f\d+\.test\.ts/.test(line)) fileDoneMs.push(performance.now() - started)
    })
    child.stderr.resume()
    child.on('error', reject)
    child.on('exit', (code) => {
      if (code !== 0) return reject(new Error(`vitest --pool=${pool} exited with ${code}`))
      resolve({ wallMs: performance.now() - started, firstResultMs: fileDoneMs[0] ?? NaN, fileDoneMs })
    })
  })
}

export async function main(argv: string[]): Promise<Summary> {
  const { values } = parseArgs({ args: argv, options: { files: { type: 'string', default: '20' } } })
  const files = Number(values.files)
  const say = (line: string) => process.stdout.write(`${line}\n`)
  const dir = join(repo, 'fixtures', 'projects', `.run-bench-${process.pid}`)
  mkdirSync(dir, { recursive: true })
  try {
    cpSync(join(repo, 'fixtures', 'projects', 'basic', 'vitest.config.ts'), join(dir, 'vitest.config.ts'))
    writeFileSync(
      join(dir, 'vitest.vm.config.ts'),
      `import { stereos } from '@stereos/vitest-plugin'\nimport { defineConfig } from 'vitest/config'\nexport default defineConfig({ plugins: [stereos({ mixtape: 'fixture', isolation: 'vm' })], test: { include: ['*.test.ts'], maxWorkers: 2 } })\n`,
    )
    for (let i = 0; i < files; i++) {
      writeFileSync(join(dir, `f${i}.test.ts`), `import { expect, test } from 'vitest'\ntest('file ${i}', () => { expect(${i} + 1).toBe(${i + 1}) })\n`)
    }
    say(`vitest benchmark: ${files} files, maxWorkers 2 (fixture VMs under ${process.arch} host)`)
    // Untimed: the first stereos run of this kind of VM boots cold and saves its template; a
    // user pays that once per kind (and per CI run), every later VM is a restore.
    await vitest(dir, 'stereos', ['f0.test.ts'])
    const forks = await vitest(dir, 'forks')
    const stereos = await vitest(dir, 'stereos')
    // Vitest's isolate: false: one guest process per worker runs many files (as forks does).
    const shared = await vitest(dir, 'stereos', ['--isolate=false'])
    // isolation: 'vm': every file in a VM of its own, a clone of the template.
    const perVm = await vitest(dir, 'stereos', ['--config', 'vitest.vm.config.ts'])
    // Warm per-file cost: the gaps between results once both VMs serve files.
    const perFileOf = (run: Run) => {
      const warm = run.fileDoneMs.slice(2)
      const gaps = warm.slice(1).map((t, i) => t - (warm[i] as number))
      return median(gaps) * 2 // two workers deliver in parallel
    }
    const perFile = perFileOf(stereos)
    const sharedPerFile = perFileOf(shared)
    await using sandbox = await Sandbox.boot({ mixtape: 'fixture' })
    const nodeMs: number[] = []
    for (let i = 0; i < 5; i++) {
      const t = performance.now()
      await sandbox.exec('node', ['-e', '1'])
      nodeMs.push(performance.now() - t)
    }
    const node = median(nodeMs)
    say(`forks:   wall ${seconds(forks.wallMs)}, first result ${seconds(forks.firstResultMs)}`)
    say(`stereos: wall ${seconds(stereos.wallMs)}, first result ${seconds(stereos.firstResultMs)}, warm per-file ${perFile.toFixed(0)} ms`)
    say(`stereos --isolate=false: wall ${seconds(shared.wallMs)}, first result ${seconds(shared.firstResultMs)}, warm per-file ${sharedPerFile.toFixed(0)} ms`)
    say(`stereos isolation 'vm': wall ${seconds(perVm.wallMs)}, first result ${seconds(perVm.firstResultMs)}`)
    say(`guest node -e 1: ${node.toFixed(0)} ms (${sandbox.info.accel})`)
    say(
      `ratios: wall stereos/forks ${(stereos.wallMs / forks.wallMs).toFixed(1)} (isolate=false ${(shared.wallMs / forks.wallMs).toFixed(1)}), isolation vm/process ${(perVm.wallMs / stereos.wallMs).toFixed(1)}, first result ${(stereos.firstResultMs / forks.firstResultMs).toFixed(1)}, warm per-file / guest node start ${(perFile / node).toFixed(1)} (isolate=false ${(sharedPerFile / node).toFixed(1)})`,
    )
    return {
      files,
      forksWallMs: forks.wallMs,
      stereosWallMs: stereos.wallMs,
      forksFirstResultMs: forks.firstResultMs,
      firstResultMs: stereos.firstResultMs,
      perFileMs: perFile,
      nodeStartMs: node,
      wallRatio: stereos.wallMs / forks.wallMs,
      perFileNodeRatio: perFile / node,
      sharedWallMs: shared.wallMs,
      sharedPerFileMs: sharedPerFile,
      sharedWallRatio: shared.wallMs / forks.wallMs,
      sharedPerFileNodeRatio: sharedPerFile / node,
      vmWallMs: perVm.wallMs,
      vmFirstResultMs: perVm.firstResultMs,
      vmProcessWallRatio: perVm.wallMs / stereos.wallMs,
    }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}
