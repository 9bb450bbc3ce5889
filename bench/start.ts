// VM start: a cold boot vs a restore from a template, both to a ready agent, same run.
// The agent starts over SSH (`bootstrap: 'ssh'`), as the Vitest pool starts it; with 'agentd'
// a restored guest's agentd is already running and acts on the new jcard at its next 5 s tick.
//
// Cold boots run with `template: 'off'`, restores with 'auto' (the template is saved by the
// first 'auto' boot, not timed). Runs alternate to spread drift. Also times 4 boots started at
// once, each way: the wall time until all 4 agents answer. Each boot is timed from Sandbox.boot
// to its resolution (agent ready, the guest's clock set); stereosd ready is read off the timeline.
import { parseArgs } from 'node:util'
import { Sandbox, type SandboxOptionsInput } from '@stereos/harness'
import type { Summary } from './stats.ts'
import { median, seconds } from './stats.ts'

export async function main(argv: string[]): Promise<Summary> {
  const { values } = parseArgs({
    args: argv,
    options: { runs: { type: 'string', default: '3' }, parallel: { type: 'string', default: '4' }, arch: { type: 'string', default: 'x86_64' } },
  })
  const runs = Math.max(3, Number(values.runs))
  const parallel = Math.max(2, Number(values.parallel))
  const arch = values.arch as 'x86_64' | 'aarch64'
  const say = (line: string) => process.stdout.write(`${line}\n`)
  const base: SandboxOptionsInput = { arch, mixtape: 'fixture', bootstrap: 'ssh' }

  say(
    `start benchmark: ${arch} fixture, agent over SSH (as the pool), ${runs} runs each, alternating; then ${parallel} at once each way (host: ${process.arch})`,
  )
  // Not timed: builds/locates the fixture and the harness share, and saves (or finds) the template.
  const first = await boot({ ...base, template: 'auto' })
  say(
    `template ${first.template?.id ?? '(none)'} ${first.template?.built ? 'saved by this run' : 'already saved'}; accel ${first.accel}; ${first.template?.built ? `that first boot took ${seconds(first.ms)}` : ''}`,
  )
  if (!first.template) throw new Error('no template was used: is zstd installed? (STEREOS_TEMPLATE must not be off)')

  const cold: Timed[] = []
  const warm: Timed[] = []
  for (let i = 0; i < runs; i++) {
    cold.push(await boot({ ...base, template: 'off' }))
    warm.push(await boot({ ...base, template: 'auto' }))
    say(
      `run ${i + 1}: cold ${seconds(cold.at(-1)!.ms)} (stereosd ${seconds(cold.at(-1)!.stereosdMs)})   restored ${seconds(warm.at(-1)!.ms)} (stereosd ${seconds(warm.at(-1)!.stereosdMs)})`,
    )
  }
  const coldMs = median(cold.map((t) => t.ms))
  const warmMs = median(warm.map((t) => t.ms))
  const coldStereosd = median(cold.map((t) => t.stereosdMs))
  const warmStereosd = median(warm.map((t) => t.stereosdMs))

  const coldParallel = await together(parallel, { ...base, template: 'off' })
  say(`${parallel} cold boots at once: all agents ready after ${seconds(coldParallel)}`)
  const warmParallel = await together(parallel, { ...base, template: 'auto' })
  say(`${parallel} restores at once: all agents ready after ${seconds(warmParallel)}`)

  say(`median cold boot → agent ready: ${seconds(coldMs)} (stereosd ready at ${seconds(coldStereosd)})`)
  say(`median restore → agent ready: ${seconds(warmMs)} (stereosd ready at ${seconds(warmStereosd)})`)
  say(`ratio cold / restored, to agent ready: ${(coldMs / warmMs).toFixed(2)} (issue target >= 10)`)
  say(`ratio cold / restored, to stereosd ready: ${(coldStereosd / warmStereosd).toFixed(2)}`)
  say(`ratio ${parallel} cold / ${parallel} restored at once: ${(coldParallel / warmParallel).toFixed(2)}`)
  return {
    runs,
    parallel,
    coldMs,
    restoredMs: warmMs,
    ratio: coldMs / warmMs,
    coldStereosdMs: coldStereosd,
    restoredStereosdMs: warmStereosd,
    stereosdRatio: coldStereosd / warmStereosd,
    coldParallelMs: coldParallel,
    restoredParallelMs: warmParallel,
    parallelRatio: coldParallel / warmParallel,
  }
}

interface Timed {
  ms: number
  stereosdMs: number
  accel: string
  template: { id: string; built: boolean } | undefined
}

async function boot(options: SandboxOptionsInput): Promise<Timed> {
  const started = performance.now()
  const sandbox = await Sandbox.boot(options)
  const ms = performance.now() - started
  const { info } = sandbox
  await sandbox.shutdown()
  return { ms, stereosdMs: info.timeline.find((e) => e.phase === 'stereosd-ready')?.atMs ?? Number.NaN, accel: info.accel, template: info.template }
}

async function together(count: number, options: SandboxOptionsInput): Promise<number> {
  const started = performance.now()
  const sandboxes = await Promise.all(Array.from({ length: count }, () => Sandbox.boot(options)))
  const ms = performance.now() - started
  await Promise.all(sandboxes.map((s) => s.shutdown()))
  return ms
}
