import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { isHarnessError, Sandbox } from '@stereos/harness'
import { afterAll, describe, expect, test } from 'vitest'
import { runtimeDir, vmDirs } from '../e2e/support.js'

/**
 * Issue 14 items 2 and 3 through the public API: Sandbox.boot refuses a planted runtime dir and
 * a disk image that names a host file, before any QEMU starts. (The unit tests attack
 * vm-dir.ts and disk.ts directly; these show boot goes through them.) No VM boots here.
 */

const temps: string[] = []
afterAll(() => {
  for (const dir of temps) rmSync(dir, { recursive: true, force: true })
})
const temp = (prefix: string) => {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  temps.push(dir)
  return dir
}

async function bootError(options: Parameters<typeof Sandbox.boot>[0]): Promise<Error> {
  return Sandbox.boot({ bootstrap: 'none', arch: 'x86_64', bootTimeoutMs: 60_000, ...options }).then(
    async (sandbox) => {
      await sandbox.shutdown()
      throw new Error('the boot succeeded')
    },
    (err: unknown) => err as Error,
  )
}

/** A mixtape dir whose disk is `stereos.qcow2` backed by `backing`; the kernel files are stand-ins (boot stops before QEMU). */
function backedMixtape(backing: string): string {
  const mixtape = temp('sh-evil-mixtape-')
  for (const name of ['bzImage', 'initrd']) writeFileSync(join(mixtape, name), 'not used: the boot stops at the disk\n')
  writeFileSync(join(mixtape, 'cmdline'), 'console=ttyS0\n')
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', backing, '-F', 'raw', join(mixtape, 'stereos.qcow2'), '64M'])
  return mixtape
}

describe('Sandbox.boot refuses before starting QEMU', () => {
  test('a mixtape whose qcow2 disk is backed by a host file (qemu-img create -b <file> -F raw)', async () => {
    const secret = join(temp('sh-host-'), 'id_ed25519')
    writeFileSync(secret, 'host private key\n')
    const mixtape = backedMixtape(secret)
    const runtime = runtimeDir()
    temps.push(runtime)
    const err = await bootError({ mixtape, runtimeDir: runtime })
    expect(isHarnessError(err, 'MIXTAPE_INVALID'), String(err)).toBe(true)
    expect(err.message).toContain(`names a backing file (${secret})`)
    // The failed boot left no disk behind (its VM dir holds only the logs, if anything).
    for (const id of vmDirs(runtime)) expect(existsSync(join(runtime, 'vms', id, 'disk.qcow2'))).toBe(false)
  })

  test("a runtime dir whose vms/ is a symlink: refused, and the link's target keeps its files", async () => {
    const victim = temp('sh-victim-')
    writeFileSync(join(victim, 'notes.txt'), 'keep me')
    mkdirSync(join(victim, 'vm-1-abcdef'))
    const runtime = temp('sh-runtime-')
    symlinkSync(victim, join(runtime, 'vms'))
    const err = await bootError({ mixtape: backedMixtape('/dev/null'), runtimeDir: runtime })
    expect(isHarnessError(err, 'HOST'), String(err)).toBe(true)
    expect(err.message).toContain(`${join(runtime, 'vms')} is a symbolic link`)
    expect(readdirSync(victim).sort()).toEqual(['notes.txt', 'vm-1-abcdef'])
  })
})
