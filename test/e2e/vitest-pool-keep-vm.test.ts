import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, describe, expect, test } from 'vitest'
import { processExists, repoRoot, runCommand, runtimeDir } from './support.js'
import type { CommandResult } from './support.js'

const VITEST = join(repoRoot, 'node_modules', 'vitest', 'vitest.mjs')
const CLI = join(repoRoot, 'packages', 'harness', 'dist', 'cli', 'main.js')

function node(args: string[], cwd: string, env: Record<string, string>): Promise<CommandResult> {
  return runCommand(process.execPath, args, { cwd, env: { ...process.env, ...env, NO_COLOR: '1' } })
}

interface Kept {
  id: string
  pid: number
  vmDir: string
  running: boolean
  reason: string
}

describe("keepVm: 'on-failure' (#13.8)", () => {
  const runtime = runtimeDir()
  const env = { STEREOS_RUNTIME_DIR: runtime }
  const pids: number[] = []
  afterAll(() => {
    // Whatever the assertions did: no QEMU outlives this test file.
    for (const pid of pids) if (processExists(pid)) process.kill(pid, 'SIGKILL')
  })

  test('the VM of the failed file outlives vitest; kept lists it, ssh enters it (the guest state is there), stop ends it', async () => {
    const dir = join(repoRoot, 'fixtures', 'projects', 'keep-vm')
    const { code, output } = await node([VITEST, 'run', '--pool=stereos'], dir, env)
    expect(code).toBe(1)
    // The kept VM holds nothing of vitest's process open: it exits once closed, not after
    // teardownTimeout with Vitest's "something prevents ... from exiting" (#20).
    expect(output).not.toContain('close timed out')
    expect(output).not.toMatch(/something prevents/)
    // One line per kept VM, with the command that enters it.
    const lines = output.split('\n').filter((l) => l.includes('kept VM '))
    expect(lines).toHaveLength(1)
    const id = /kept VM (vm-\S+) running \(a-fails\.test\.ts failed\): enter it with `STEREOS_RUNTIME_DIR=\S+ npx stereos-harness ssh (vm-\S+)`/.exec(
      lines[0] ?? '',
    )
    expect(id?.[1]).toBeDefined()
    expect(id?.[2]).toBe(id?.[1])
    const vmId = id?.[1] as string

    // vitest has exited; the kept QEMU has not.
    const listed = await node([CLI, 'kept', '--json'], repoRoot, env)
    const kept = JSON.parse(listed.stdout) as Kept[]
    expect(kept.map((k) => [k.id, k.running])).toEqual([[vmId, true]])
    const pid = kept[0]?.pid as number
    pids.push(pid)
    expect(processExists(pid)).toBe(true)
    expect(readFileSync(join(kept[0]?.vmDir as string, 'kept'), 'utf8')).toMatch(/a-fails\.test\.ts failed/)

    // The failed test's state is there to look at.
    const ssh = await node([CLI, 'ssh', vmId, '--', 'cat', '/tmp/evidence.txt'], repoRoot, env)
    expect(ssh.output).toContain(`left by ${vmId}`)
    expect(ssh.code).toBe(0)
    // The command keeps its argv through ssh and the guest's shell (#20): not `sh -c echo one two`.
    const quoted = await node([CLI, 'ssh', vmId, '--', 'sh', '-c', 'echo one two'], repoRoot, env)
    expect(quoted.output).toMatch(/^one two$/m)
    expect(quoted.code).toBe(0)

    const stopped = await node([CLI, 'stop', vmId], repoRoot, env)
    expect(stopped.output).toContain(`stopped ${vmId}`)
    expect(processExists(pid) && readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(vmId)).toBe(false)
    expect(existsSync(kept[0]?.vmDir as string)).toBe(false)
    expect(JSON.parse((await node([CLI, 'kept', '--json'], repoRoot, env)).stdout)).toEqual([])
  }, 600_000)

  test('without keepVm nothing is kept, and the CLI says so with the fix', async () => {
    const ssh = await node([CLI, 'ssh', 'vm-1-000000'], repoRoot, env)
    expect(ssh.code).toBe(1)
    expect(ssh.output).toMatch(/no kept VM vm-1-000000 in \S+\nFix: no VM is kept; run vitest with stereos\(\{ keepVm: "on-failure" \}\)/)
  })
})
