import { join } from 'node:path'
import { execa } from 'execa'
import { expect, test } from 'vitest'
import { repoRoot, runtimeDir, vmDirs } from './support.js'

const cli = join(repoRoot, 'packages', 'harness', 'dist', 'cli', 'main.js')

test('stereos-harness run: boots, streams the command output and stdin, exits with its code, shuts down', async () => {
  const runtime = runtimeDir()
  const result = await execa(process.execPath, [cli, 'run', '--', 'sh', '-c', 'echo "out: $(cat)"; uname -m >&2; exit 3'], {
    input: 'from the host\n',
    reject: false,
    env: { STEREOS_RUNTIME_DIR: runtime },
  })
  expect(result.exitCode).toBe(3)
  expect(result.stdout).toBe('out: from the host')
  expect(result.stderr).toMatch(/^(x86_64|aarch64)$/m)
  expect(vmDirs(runtime)).toEqual([])
}, 300_000)

test('stereos-harness run without a command is a usage error, before any boot', async () => {
  const result = await execa(process.execPath, [cli, 'run'], { reject: false })
  expect(result.exitCode).toBe(1)
  expect(result.stderr).toContain('run needs a command: stereos-harness run [options] -- CMD [ARGS...]')
})
