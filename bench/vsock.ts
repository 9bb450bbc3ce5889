// `npm run bench -- vsock [--arch x86_64|aarch64]`: the addon's Duplex over AF_VSOCK (guest
// loopback) vs Node's TCP over loopback, in the same guest, same run (native/bench/vsock.mjs),
// booted through the harness. Its last line is the throughput ratio.
import { parseArgs } from 'node:util'
import { runInSandbox } from '../native/test/guest/run-in-sandbox.ts'

export async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({ args: argv, options: { arch: { type: 'string', default: 'x86_64' } } })
  const arch = values.arch as 'x86_64' | 'aarch64'
  process.stdout.write(`vsock benchmark in the ${arch} fixture guest (TCG on this host; figures vary with host load)\n`)
  const { exitCode, output } = await runInSandbox(arch, 'bench/vsock.mjs', { timeoutMs: 900_000 })
  process.stdout.write(output)
  if (exitCode !== 0) process.exitCode = exitCode
}
