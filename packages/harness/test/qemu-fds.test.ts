import { chmodSync, closeSync, existsSync, mkdtempSync, openSync, readFileSync, readlinkSync, realpathSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { describe, expect, test } from 'vitest'
import { spawnQemu } from '../src/vmm/qemu-process.js'
import { VHOST_FD_IN_CHILD } from '../src/control/plane.js'

describe.skipIf(process.platform !== 'linux')('the vhost fd reaches QEMU', () => {
  test('spawnQemu hands our close-on-exec fd to the child as fd 3 (through setpriv when present)', async () => {
    const dir = realpathSync(mkdtempSync(join(tmpdir(), 'qemu-fds-')))
    const target = join(dir, 'stand-in-for-vhost-vsock')
    writeFileSync(target, '')
    // A stand-in for QEMU: reports what its fd 3 is, then lives long enough to be inspected
    // (exec: one process, so the SIGKILL below ends it and its copies of the log fds).
    const script = join(dir, 'fake-qemu')
    const out = join(dir, 'child-view')
    writeFileSync(script, `#!/bin/sh\nreadlink /proc/$$/fd/${VHOST_FD_IN_CHILD} > "$1.tmp" && mv "$1.tmp" "$1"\nexec sleep 5\n`)
    chmodSync(script, 0o755)
    // Node opens with O_CLOEXEC, as the addon opens /dev/vhost-vsock.
    const fd = openSync(target, 'r')
    try {
      const qemu = spawnQemu({ binary: script, argv: [out], qemuLog: join(dir, 'qemu.log'), fds: [fd] })
      try {
        for (let i = 0; i < 200 && !existsSync(out); i++) await sleep(25)
        expect(readFileSync(out, 'utf8').trim()).toBe(target)
        expect(readlinkSync(`/proc/${qemu.pid}/fd/${VHOST_FD_IN_CHILD}`)).toBe(target)
      } finally {
        qemu.kill('SIGKILL')
        await qemu.exited
      }
    } finally {
      closeSync(fd)
      rmSync(dir, { recursive: true, force: true })
    }
  })

  test('without fds the child has no fd 3', async () => {
    const dir = realpathSync(mkdtempSync(join(tmpdir(), 'qemu-fds-')))
    const script = join(dir, 'fake-qemu')
    const out = join(dir, 'child-view')
    writeFileSync(script, `#!/bin/sh\n(readlink /proc/$$/fd/3 || echo none) > "$1.tmp" 2>/dev/null; mv "$1.tmp" "$1"\n`)
    chmodSync(script, 0o755)
    const fd = openSync(script, 'r') // open in the parent: close-on-exec keeps it out of the child
    try {
      const qemu = spawnQemu({ binary: script, argv: [out], qemuLog: join(dir, 'qemu.log') })
      await qemu.exited
      expect(readFileSync(out, 'utf8').trim()).toBe('none')
    } finally {
      closeSync(fd)
      rmSync(dir, { recursive: true, force: true })
    }
  })
})

describe.skipIf(process.platform !== 'linux')('QEMU exits on its own terms', () => {
  test('a killed QEMU has exited although a process it started still holds its qemu.log', async () => {
    const dir = realpathSync(mkdtempSync(join(tmpdir(), 'qemu-exit-')))
    // As the netns wrapper starts its relay: a background child that inherits stdout/stderr.
    const script = join(dir, 'fake-qemu')
    const orphanPid = join(dir, 'orphan.pid')
    writeFileSync(script, `#!/bin/sh\nsleep 60 &\necho $! > "$1"\nexec sleep 60\n`)
    chmodSync(script, 0o755)
    const qemu = spawnQemu({ binary: script, argv: [orphanPid], qemuLog: join(dir, 'qemu.log') })
    try {
      for (let i = 0; i < 200 && !existsSync(orphanPid); i++) await sleep(25)
      qemu.kill('SIGKILL')
      const exit = await Promise.race([qemu.exited, sleep(5_000).then(() => 'still waiting' as const)])
      expect(exit).toEqual({ code: undefined, signal: 'SIGKILL' })
    } finally {
      const orphan = Number(readFileSync(orphanPid, 'utf8'))
      if (orphan > 0) process.kill(orphan, 'SIGKILL')
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
