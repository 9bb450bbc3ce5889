import { spawn } from 'node:child_process'
import { join } from 'node:path'
import { Sandbox } from '@stereos/harness'
import { describe, expect, test } from 'vitest'
import { processExists, repoRoot, runtimeDir, vmDirs } from './support.js'

describe('a runner killed with SIGKILL leaks nothing', () => {
  test('QEMU dies with its runner (parent-death signal) and the next boot sweeps the dir', async () => {
    const runtime = runtimeDir()
    const script = `
      import { Sandbox } from '@stereos/harness'
      const sandbox = await Sandbox.boot({ arch: 'x86_64', runtimeDir: ${JSON.stringify(runtime)}, bootstrap: 'none' })
      process.stdout.write(JSON.stringify({ pid: sandbox.info.pid, dir: sandbox.info.vmDir }) + '\\n')
      setInterval(() => {}, 1000)
    `
    const runner = spawn(process.execPath, ['--input-type=module', '-e', script], { cwd: join(repoRoot, 'test'), stdio: ['ignore', 'pipe', 'inherit'] })
    const line = await new Promise<string>((resolve, reject) => {
      runner.stdout.setEncoding('utf8').once('data', resolve)
      runner.once('exit', (code) => reject(new Error(`runner exited early (${code})`)))
    })
    const { pid: qemuPid, dir } = JSON.parse(line) as { pid: number; dir: string }
    expect(processExists(qemuPid)).toBe(true)

    runner.kill('SIGKILL')
    const deadline = Date.now() + 10_000
    while (processExists(qemuPid) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100))
    expect(processExists(qemuPid)).toBe(false)
    expect(vmDirs(runtime)).toEqual([dir.split('/').at(-1)])

    // The next boot in this runtime dir reaps the orphan before starting its own VM.
    const lines: string[] = []
    await using next = await Sandbox.boot({ arch: 'x86_64', runtimeDir: runtime, bootstrap: 'none' }, { log: (l) => lines.push(l) })
    expect(lines.some((l) => l.startsWith('removed 1 VM dir(s) left by runners that died'))).toBe(true)
    expect(vmDirs(runtime)).toEqual([next.info.id])
  })
})
