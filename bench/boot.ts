// Boot-to-ready through Sandbox.boot vs the same QEMU argv launched by hand, same run. Both boot
// cold (template: 'off'): restores from templates are bench/start.ts's subject.
//
// The baseline takes the exact argv of a Sandbox-booted QEMU (from /proc/<pid>/cmdline), gives
// it a fresh overlay, ports and paths, starts QEMU directly and times until stereosd answers
// `ping` on a raw socket. Sandbox.boot additionally resolves the mixtape, probes KVM, waits for
// `ready` via get_health and provisions (ssh key, set_config). Runs alternate to spread drift.
import { spawn, execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { connect, createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { Sandbox } from '@stereos/harness'
import type { Summary } from './stats.ts'
import { median, seconds } from './stats.ts'

export async function main(argv: string[]): Promise<Summary> {
  const { values } = parseArgs({ args: argv, options: { runs: { type: 'string', default: '3' }, arch: { type: 'string', default: 'x86_64' } } })
  const runs = Math.max(3, Number(values.runs))
  const arch = values.arch as 'x86_64' | 'aarch64'
  const say = (line: string) => process.stdout.write(`${line}\n`)

  say(`boot benchmark: ${arch} fixture, ${runs} runs each, alternating (host: ${process.arch}, 2 cores)`)
  // Warm-up boot: builds/locates the fixture, warms the page cache, and gives us the argv.
  const warm = await Sandbox.boot({ arch, bootstrap: 'none', template: 'off' })
  const template = readFileSync(`/proc/${warm.info.pid}/cmdline`, 'utf8').split('\0').filter(Boolean)
  const image = JSON.parse(execFileSync('qemu-img', ['info', '-U', '--output=json', join(warm.info.vmDir, 'disk.qcow2')], { encoding: 'utf8' })) as {
    'backing-filename': string
    'virtual-size': number
  }
  const warmDir = warm.info.vmDir
  await warm.shutdown()
  say(`accel: ${warm.info.accel}${warm.info.accelNote ? ` (${warm.info.accelNote})` : ''}`)

  const harness: number[] = []
  const ready: number[] = []
  const raw: number[] = []
  for (let i = 0; i < runs; i++) {
    const started = performance.now()
    const sandbox = await Sandbox.boot({ arch, bootstrap: 'none', template: 'off' })
    harness.push(performance.now() - started)
    ready.push(sandbox.info.timeline.find((e) => e.phase === 'stereosd-ready')!.atMs)
    await sandbox.shutdown()
    raw.push(await rawBoot(template, warmDir, image))
    say(`run ${i + 1}: Sandbox.boot ${seconds(harness.at(-1)!)} (ready at ${seconds(ready.at(-1)!)})   raw QEMU → ping ${seconds(raw.at(-1)!)}`)
  }
  const h = median(harness)
  const b = median(raw)
  say(`median Sandbox.boot (ready + provisioned): ${seconds(h)}; stereosd ready inside it at ${seconds(median(ready))}`)
  say(`median raw baseline (overlay + QEMU + first pong): ${seconds(b)}`)
  say(`MACHINE-FACTS reference (TCG, this machine kind): bare busybox init ~2.5 s; a guest Node server answering ~5-7 s`)
  say(`ratio Sandbox.boot / raw baseline: ${(h / b).toFixed(2)} (target <= 1.10)`)
  return { runs, sandboxBootMs: h, stereosdReadyMs: median(ready), rawBootMs: b, ratio: h / b }
}

async function rawBoot(template: string[], warmDir: string, image: { 'backing-filename': string; 'virtual-size': number }): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'sh-bench-raw-'))
  const sshPort = await freePort()
  const controlPort = await freePort()
  // setpriv execs QEMU in place, so /proc/<pid>/cmdline is QEMU's own argv.
  // The forwards' host ports whatever they were (QEMU in a private network namespace uses fixed ones there).
  const argv = template.map((arg) =>
    arg
      .replaceAll(warmDir, dir)
      .replace(/:\d+-:22\b/, `:${sshPort}-:22`)
      .replace(/:\d+-:1024\b/, `:${controlPort}-:1024`),
  )
  const started = performance.now()
  execFileSync('qemu-img', [
    'create',
    '-q',
    '-f',
    'qcow2',
    '-b',
    image['backing-filename'],
    '-F',
    'raw',
    join(dir, 'disk.qcow2'),
    String(image['virtual-size']),
  ])
  const qemu = spawn(argv[0]!, argv.slice(1), { stdio: 'ignore' })
  try {
    while (!(await ping(controlPort))) await new Promise((resolve) => setTimeout(resolve, 50))
    return performance.now() - started
  } finally {
    qemu.kill('SIGKILL')
    await new Promise((resolve) => qemu.once('exit', resolve))
    rmSync(dir, { recursive: true, force: true })
  }
}

function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port })
    const done = (ok: boolean) => {
      socket.destroy()
      resolve(ok)
    }
    socket.setTimeout(1_000, () => done(false))
    socket.once('error', () => done(false))
    socket.once('close', () => done(false))
    socket.once('connect', () => socket.write('{"type":"ping"}\n'))
    socket.setEncoding('utf8').on('data', (data: string) => done(data.startsWith('{"type":"pong"}')))
  })
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number }
      server.close(() => resolve(port))
    })
  })
}
