// Time to a ready agent on a NixOS-shaped guest (`fixture-nixos`: no guest Node, no FHS loader,
// as real stereOS images) against the Debian-shaped fixture (Node baked in), same run, for each
// way the agent starts: `ssh` (the pool's way; with templates the agent runs in the template from
// the share image) and `agentd` (a restored guest's agentd starts the launcher from the 9p share).
// Cold boots (`template: 'off'`) and restores (`'auto'`; the template is saved by a first, untimed
// boot). Runs alternate between the two guests to spread drift.
import { parseArgs } from 'node:util'
import { Sandbox, type SandboxOptionsInput } from '@stereos/harness'
import type { Summary } from './stats.ts'
import { median, seconds } from './stats.ts'

const GUESTS = ['fixture', 'fixture-nixos'] as const
const WAYS = [
  { bootstrap: 'ssh', template: 'auto' },
  { bootstrap: 'agentd', template: 'auto' },
  { bootstrap: 'agentd', template: 'off' },
] as const

export async function main(argv: string[]): Promise<Summary> {
  const { values } = parseArgs({ args: argv, options: { runs: { type: 'string', default: '3' } } })
  const runs = Math.max(3, Number(values.runs))
  const say = (line: string) => process.stdout.write(`${line}\n`)
  say(`guest benchmark: agent ready on ${GUESTS.join(' vs ')} (x86_64), ${runs} runs each, alternating (host: ${process.arch})`)
  const summary: Summary = { runs }
  for (const way of WAYS) {
    const label = `${way.bootstrap}, template ${way.template}`
    // Not timed: saves (or finds) each guest's template for this way.
    if (way.template === 'auto') for (const mixtape of GUESTS) await boot({ mixtape, ...way })
    const times: Record<(typeof GUESTS)[number], number[]> = { fixture: [], 'fixture-nixos': [] }
    for (let i = 0; i < runs; i++) {
      for (const mixtape of GUESTS) times[mixtape].push(await boot({ mixtape, ...way }))
      say(`${label}, run ${i + 1}: ${GUESTS.map((g) => `${g} ${seconds(times[g].at(-1) ?? 0)}`).join('   ')}`)
    }
    const [fixture, nixos] = [median(times.fixture), median(times['fixture-nixos'])]
    say(`${label}: median fixture ${seconds(fixture)}, fixture-nixos ${seconds(nixos)}, ratio nixos / fixture ${(nixos / fixture).toFixed(2)} (target <= 1.10)`)
    const key = `${way.bootstrap}${way.template === 'auto' ? 'Restored' : 'Cold'}`
    Object.assign(summary, { [`${key}FixtureMs`]: fixture, [`${key}NixosMs`]: nixos, [`${key}Ratio`]: nixos / fixture })
  }
  return summary
}

/** Sandbox.boot to a ready agent (the agent answered; the guest clock set), in ms. */
async function boot(options: SandboxOptionsInput): Promise<number> {
  const started = performance.now()
  const sandbox = await Sandbox.boot({ arch: 'x86_64', ...options })
  const ms = performance.now() - started
  await sandbox.shutdown()
  return ms
}
