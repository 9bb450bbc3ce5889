// `npm run bench -- vsock [--arch x86_64|aarch64]`: the addon's Duplex over AF_VSOCK (guest
// loopback) vs Node's TCP over loopback, in the same guest, same run (native/bench/vsock.mjs),
// booted through the harness. Its last line is the throughput ratio.
import { parseArgs } from 'node:util'
import { runInSandbox } from '../native/test/guest/run-in-sandbox.ts'
import type { Summary } from './stats.ts'

export async function main(argv: string[]): Promise<Summary> {
  const { values } = parseArgs({ args: argv, options: { arch: { type: 'string', default: 'x86_64' } } })
  const arch = values.arch as 'x86_64' | 'aarch64'
  process.stdout.write(`vsock benchmark in the ${arch} fixture guest (TCG on this host; figures vary with host load)\n`)
  const { exitCode, output } = await runInSandbox(arch, 'bench/vsock.mjs', { timeoutMs: 900_000 })
  process.stdout.write(output)
  if (exitCode !== 0) process.exitCode = exitCode
  // The in-guest bench prints `ratio … <number>` as its last line.
  const ratio = Number(/ratio[^\n]*?([\d.]+)\s*$/.exec(output.trim())?.[1])
  return { exitCode, ratio }
}
