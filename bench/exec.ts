// The guest agent's costs, each against a baseline over the same transport in the same run:
//   exec:   200 sequential `true` execs vs 200 one-byte round trips through a running `cat`
//           (the channel's own latency: what an exec adds on top is process start + control);
//   copyIn: 100 MB file via copyIn (hash, store, place) vs the same bytes piped raw into
//           `cat > file` in the guest; then copyIn again (content already in the guest).
import { createReadStream, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pipeline } from 'node:stream/promises'
import { parseArgs } from 'node:util'
import { Sandbox } from '@stereos/harness'
import type { Summary } from './stats.ts'
import { median, seconds } from './stats.ts'

export async function main(argv: string[]): Promise<Summary> {
  const { values } = parseArgs({
    args: argv,
    options: { execs: { type: 'string', default: '200' }, mb: { type: 'string', default: '100' }, arch: { type: 'string', default: 'x86_64' } },
  })
  const execs = Number(values.execs)
  const size = Number(values.mb) * 1_000_000
  const say = (line: string) => process.stdout.write(`${line}\n`)
  const sandbox = await Sandbox.boot({ arch: values.arch as 'x86_64' | 'aarch64' })
  const work = mkdtempSync(join(tmpdir(), 'bench-exec-'))
  try {
    say(`exec benchmark: ${sandbox.info.arch} fixture under ${sandbox.info.accel}, agent over ${sandbox.info.transport.kind}`)
    for (let i = 0; i < 10; i++) await sandbox.exec('true')
    const execMs: number[] = []
    for (let i = 0; i < execs; i++) {
      const t = performance.now()
      await sandbox.exec('true')
      execMs.push(performance.now() - t)
    }
    const cat = await sandbox.spawn('cat', [], { stdin: true })
    const rttMs: number[] = []
    const stdin = cat.stdin!
    for (let i = 0; i < execs; i++) {
      const t = performance.now()
      const echoed = new Promise((resolve) => cat.stdout.once('data', resolve))
      stdin.write('x')
      await echoed
      rttMs.push(performance.now() - t)
    }
    stdin.end()
    await cat.exited
    const execMedian = median(execMs)
    const rttMedian = median(rttMs)
    say(`exec true:        median ${execMedian.toFixed(1)} ms, total ${seconds(execMs.reduce((a, b) => a + b, 0))} for ${execs}`)
    say(`channel echo:     median ${rttMedian.toFixed(1)} ms (1-byte round trip through cat)`)

    const file = join(work, 'payload.bin')
    const chunk = randomBytes(1_000_000)
    writeFileSync(file, Buffer.alloc(0))
    for (let i = 0; i < size / 1_000_000; i++)
      writeFileSync(
        file,
        chunk.map((b) => b ^ i),
        { flag: 'a' },
      )
    const rawStart = performance.now()
    const sink = await sandbox.spawn('sh', ['-c', 'cat > /home/agent/raw.bin'], { stdin: true })
    await pipeline(createReadStream(file, { highWaterMark: 256 * 1024 }), sink.stdin!)
    await sink.exited
    const rawMs = performance.now() - rawStart
    await sandbox.exec('rm', ['-f', '/home/agent/raw.bin'])
    const copyStart = performance.now()
    await sandbox.copyIn(file, '/home/agent/copied.bin')
    const copyMs = performance.now() - copyStart
    // The fixture's disk has ~280 MiB free: the blob stays in the agent's store, the copy goes.
    await sandbox.exec('rm', ['-f', '/home/agent/copied.bin'])
    const againStart = performance.now()
    const again = await sandbox.copyIn(file, '/home/agent/copied-again.bin')
    const againMs = performance.now() - againStart
    const mbps = (ms: number) => (size / 1e6 / (ms / 1000)).toFixed(1)
    say(`raw pipe ${size / 1e6} MB: ${seconds(rawMs)} (${mbps(rawMs)} MB/s)`)
    say(`copyIn   ${size / 1e6} MB: ${seconds(copyMs)} (${mbps(copyMs)} MB/s)`)
    say(`copyIn again:     ${seconds(againMs)} (sent ${again.sentBytes} bytes)`)
    say(`ratios: exec/echo latency ${(execMedian / rttMedian).toFixed(2)}, copyIn/raw throughput ${(rawMs / copyMs).toFixed(2)}`)
    return {
      execMedianMs: execMedian,
      echoMedianMs: rttMedian,
      rawPipeMs: rawMs,
      copyInMs: copyMs,
      copyInAgainMs: againMs,
      execEchoRatio: execMedian / rttMedian,
      copyInRawRatio: rawMs / copyMs,
    }
  } finally {
    rmSync(work, { recursive: true, force: true })
    await sandbox.shutdown()
  }
}
