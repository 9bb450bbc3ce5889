import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, test } from 'vitest'
import { spawnQemu } from '../src/vmm/qemu-process.js'
import { connectQmp } from '../src/vmm/qmp-connect.js'

// A real QEMU, paused before the first instruction (-S): QMP works without any guest.
describe('QMP client against a real QEMU', () => {
  test('capabilities, query-status, an error reply, then quit ends QEMU', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sh-qmp-'))
    const socket = join(dir, 'qmp.sock')
    const qemu = spawnQemu({
      binary: 'qemu-system-x86_64',
      argv: ['-machine', 'q35', '-accel', 'tcg', '-nodefaults', '-display', 'none', '-S', '-qmp', `unix:${socket},server,nowait`],
      qemuLog: join(dir, 'qemu.log'),
    })
    try {
      const qmp = await connectQmp(socket, qemu)
      await expect(qmp.queryStatus()).resolves.toMatchObject({ running: false, status: 'prelaunch' })
      await expect(qmp.execute('no-such-command')).rejects.toMatchObject({ code: 'QMP', message: expect.stringContaining('CommandNotFound') })
      // The failed command did not desynchronise the connection.
      await expect(qmp.execute('query-name')).resolves.toEqual({})
      await qmp.execute('quit')
      await expect(qemu.exited).resolves.toMatchObject({ code: 0 })
      qmp.close()
    } finally {
      qemu.kill('SIGKILL')
    }
  })

  test('a missing QEMU binary is a QEMU_NOT_FOUND error with the package to install', () => {
    expect(() => spawnQemu({ binary: 'qemu-system-x86_64-not-installed', argv: [], qemuLog: '/dev/null' })).toThrow(
      expect.objectContaining({ code: 'QEMU_NOT_FOUND', message: expect.stringContaining('was not found on PATH') }),
    )
  })
})
