// capture: 'on-failure' against capture: 'never' on the same generated project (4 files, one
// failing), same run, alternating, medians of --runs: the wall time a failing run pays for its
// capture, the capture's size and the pool's own figure for it, and what a passing run pays
// for having capture on (nothing is expected). A one-file run first (untimed) saves the VM
// template, so the timed runs measure restores.
import { spawn } from 'node:child_process'
import { mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { openCapture } from '@stereos/harness'
import { median, seconds, type Summary } from './stats.ts'

const repo = join(fileURLToPath(import.meta.url), '..', '..')
const VITEST = join(repo, 'node_modules', 'vitest', 'vitest.mjs')

/** One `vitest run`: wall time, exit code, and the pool's capture line ("… (36.5 MB, 6.6 s) …"), if any. */
function vitest(cwd: string, config: string, files: string[]): Promise<{ wallMs: number; code: number; captureMs: number | undefined }> {
  return new Promise((resolve, reject) => {
    const started = performance.now()
    const child = spawn(process.execPath, [VITEST, 'run', '--pool=stereos', '--config', config, ...files], {
      cwd,
      env: { ...process.env, NO_COLOR: '1', CI: '1', STEREOS_CAPTURE_DIR: '' },
    })
    let output = ''
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()))
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()))
    child.on('error', reject)
    child.on('exit', (code) => {
      const captured = /captured in \S+ \([\d.]+ MB, ([\d.]+) s\)/.exec(output)
      resolve({ wallMs: performance.now() - started, code: code ?? 1, captureMs: captured ? Number(captured[1]) * 1000 : undefined })
    })
  })
}

export async function main(argv: string[]): Promise<Summary> {
  const { values } = parseArgs({ args: argv, options: { runs: { type: 'string', default: '2' } } })
  const runs = Number(values.runs)
  const say = (line: string) => process.stdout.write(`${line}\n`)
  const dir = join(repo, 'fixtures', 'projects', `.run-bench-capture-${process.pid}`)
  const captures = join(dir, 'captures')
  mkdirSync(dir, { recursive: true })
  try {
    for (const [name, capture] of [
      ['never', `'never'`],
      ['on', `{ when: 'on-failure', dir: 'captures' }`],
    ])
      writeFileSync(
        join(dir, `vitest.${name}.config.ts`),
        `import { stereos } from '@stereos/vitest-plugin'\nimport { defineConfig } from 'vitest/config'\nexport default defineConfig({ plugins: [stereos({ mixtape: 'fixture', capture: ${capture} })], test: { include: ['*.test.ts'], maxWorkers: 2 } })\n`,
      )
    for (let i = 0; i < 3; i++)
      writeFileSync(join(dir, `pass${i}.test.ts`), `import { expect, test } from 'vitest'\ntest('passes ${i}', () => { expect(${i}).toBe(${i}) })\n`)
    writeFileSync(join(dir, 'fail.test.ts'), `import { expect, test } from 'vitest'\ntest('fails', () => { expect('got').toBe('wanted') })\n`)
    say(`capture benchmark: 4 files (1 failing), maxWorkers 2, ${runs} runs each, alternating (fixture VMs, ${process.arch} host)`)
    await vitest(dir, 'vitest.never.config.ts', ['pass0.test.ts'])
    const failing = {
      never: [] as number[],
      on: [] as number[],
      poolMs: [] as number[],
      bytes: [] as number[],
      scrubMs: [] as number[],
      saveMs: [] as number[],
    }
    const passing = { never: [] as number[], on: [] as number[] }
    for (let i = 0; i < runs; i++) {
      failing.never.push((await vitest(dir, 'vitest.never.config.ts', [])).wallMs)
      rmSync(captures, { recursive: true, force: true })
      const on = await vitest(dir, 'vitest.on.config.ts', [])
      const made = readdirSync(captures)
      if (on.code !== 1 || made.length !== 1 || on.captureMs === undefined)
        throw new Error(`expected one capture of the failing file, got ${made.join(', ') || 'none'}`)
      failing.on.push(on.wallMs)
      failing.poolMs.push(on.captureMs)
      failing.bytes.push(statSync(join(captures, made[0] as string)).size)
      const { timings } = openCapture(join(captures, made[0] as string)).manifest
      failing.scrubMs.push(timings.scrubMs)
      failing.saveMs.push(timings.saveMs)
      const passes = ['pass0.test.ts', 'pass1.test.ts', 'pass2.test.ts']
      passing.never.push((await vitest(dir, 'vitest.never.config.ts', passes)).wallMs)
      passing.on.push((await vitest(dir, 'vitest.on.config.ts', passes)).wallMs)
    }
    const m = {
      failNever: median(failing.never),
      failOn: median(failing.on),
      pool: median(failing.poolMs),
      bytes: median(failing.bytes),
      scrub: median(failing.scrubMs),
      save: median(failing.saveMs),
      passNever: median(passing.never),
      passOn: median(passing.on),
    }
    say(
      `failing run: capture never ${seconds(m.failNever)}, on-failure ${seconds(m.failOn)} (+${seconds(m.failOn - m.failNever)}); the pool's capture figure ${seconds(m.pool)} (scrub ${seconds(m.scrub)}, save ${seconds(m.save)}), file ${(m.bytes / 1e6).toFixed(1)} MB`,
    )
    say(`passing run: capture never ${seconds(m.passNever)}, on-failure ${seconds(m.passOn)}`)
    say(`ratios: failing on/never ${(m.failOn / m.failNever).toFixed(2)}, passing on/never ${(m.passOn / m.passNever).toFixed(2)}`)
    return {
      runs,
      failingNeverWallMs: m.failNever,
      failingOnWallMs: m.failOn,
      captureAddedMs: m.failOn - m.failNever,
      capturePoolMs: m.pool,
      captureScrubMs: m.scrub,
      captureSaveMs: m.save,
      captureBytes: m.bytes,
      passingNeverWallMs: m.passNever,
      passingOnWallMs: m.passOn,
      failingRatio: m.failOn / m.failNever,
      passingRatio: m.passOn / m.passNever,
    }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}
