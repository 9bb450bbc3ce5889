import { existsSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import { HarnessError, Sandbox } from '@stereos/harness'
import { describe, expect, test } from 'vitest'
import { derivedMixtape, fixtureCmdline, fixtureDir, repoRoot, runCommand, runtimeDir, VITEST_CLI, vmDirs } from './support.js'

async function bootError(options: Parameters<typeof Sandbox.boot>[0]): Promise<HarnessError> {
  const err = await Sandbox.boot(options).then(
    async (sandbox) => {
      await sandbox.shutdown()
      throw new Error('boot succeeded but should have failed')
    },
    (e: unknown) => e,
  )
  expect(err).toBeInstanceOf(HarnessError)
  return err as HarnessError
}

describe('bad input and broken guests fail with errors that name the cause', () => {
  test('invalid options: every bad path named, nothing started', async () => {
    const runtime = runtimeDir()
    const err = await bootError({ runtimeDir: runtime, resources: { memory: 'lots' }, network: { mode: 'bridged' } } as never)
    expect(err.code).toBe('INVALID_OPTIONS')
    expect(err.message).toContain('options.resources.memory')
    expect(err.message).toContain('options.network.mode')
    expect(vmDirs(runtime)).toEqual([])
  })

  test('a QEMU binary that is not installed: QEMU_NOT_FOUND before any VM dir exists', async () => {
    const runtime = runtimeDir()
    const err = await bootError({ runtimeDir: runtime, arch: 'x86_64', qemuBinary: 'qemu-system-x86_64-missing' })
    expect(err.code).toBe('QEMU_NOT_FOUND')
    expect(err.fix).toMatch(/doctor/)
    expect(vmDirs(runtime)).toEqual([])
  })

  test('a share that does not exist names the option', async () => {
    const err = await bootError({ runtimeDir: runtimeDir(), arch: 'x86_64', shared: [{ host: '/nonexistent/dir', guest: '/mnt/x' }] })
    expect(err.code).toBe('INVALID_OPTIONS')
    expect(err.message).toContain('options.shared.0.host: /nonexistent/dir is not a directory')
  })

  test('QEMU dying at start: QEMU_EXITED quoting qemu.log; logs kept, disk removed', async () => {
    const runtime = runtimeDir()
    const mixtape = await derivedMixtape('x86_64', { bzImage: Buffer.from('this is not a kernel\n') })
    const err = await bootError({ runtimeDir: runtime, arch: 'x86_64', mixtape })
    expect(err.code).toBe('QEMU_EXITED')
    // QEMU's own words about the bad kernel, quoted from qemu.log.
    expect(err.message).toMatch(
      /QEMU exited with code 1 before the guest was ready\. Last lines of .*qemu\.log:\nqemu: linux kernel too old to load a ram disk\n/,
    )
    const [dir] = vmDirs(runtime)
    const files = readdirSync(join(runtime, 'vms', dir!))
    expect(files).toContain('qemu.log')
    expect(files).not.toContain('disk.qcow2')
    expect(err.logs.qemu).toBe(join(runtime, 'vms', dir!, 'qemu.log'))
  })

  test('a guest that never becomes ready: BOOT_TIMEOUT naming serial.log; QEMU killed; keepOnFailure keeps the dir', async () => {
    const runtime = runtimeDir()
    const base = await fixtureDir('x86_64')
    const mixtape = await derivedMixtape('x86_64', { cmdline: `${fixtureCmdline(base)} stereos.fixture.stereosd=off` })
    const err = await bootError({ runtimeDir: runtime, arch: 'x86_64', mixtape, bootTimeoutMs: 25_000, keepOnFailure: true })
    expect(err.code).toBe('BOOT_TIMEOUT')
    expect(err.message).toContain('did not become ready within 25000 ms')
    expect(err.message).toMatch(/serial\.log/)
    expect(err.fix).toContain(err.logs.serial!)
    // The guest did boot (its console is in serial.log), it just never answered.
    expect(existsSync(err.logs.serial!)).toBe(true)
    const [dir] = vmDirs(runtime)
    const files = readdirSync(join(runtime, 'vms', dir!))
    expect(files).toEqual(expect.arrayContaining(['kept', 'disk.qcow2', 'serial.log', 'qemu.log']))
  })

  test('a mixtape for another architecture is refused before boot', async () => {
    const mixtape = await fixtureDir('aarch64')
    const err = await bootError({ runtimeDir: runtimeDir(), arch: 'x86_64', mixtape })
    expect(err.code).toBe('MIXTAPE_INVALID')
    expect(err.message).toContain('built for aarch64')
  })

  test('the real vitest CLI with no QEMU on PATH: one startup error naming the fix, before any VM (#20)', async () => {
    const runtime = runtimeDir()
    const dir = join(repoRoot, 'fixtures', 'projects', 'sharded')
    const { code, output } = await runCommand(process.execPath, [VITEST_CLI, 'run', '--pool=stereos', 'a-fails.test.ts'], {
      cwd: dir,
      env: { ...process.env, PATH: join(repoRoot, 'node_modules', '.bin'), STEREOS_RUNTIME_DIR: runtime, NO_COLOR: '1' },
    })
    expect(code).toBe(1)
    expect(output).toMatch(/Startup Error[\s\S]*QEMU binary qemu-system-x86_64 was not found on PATH\nFix: apt-get install qemu-system-x86/)
    expect(output.match(/was not found on PATH/g)?.length).toBe(1)
    expect(output).not.toMatch(/a-fails\.test\.ts > /)
    expect(vmDirs(runtime)).toEqual([])
  })
})
