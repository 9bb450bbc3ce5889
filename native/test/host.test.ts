import { spawnSync } from 'node:child_process'
import { chmodSync, existsSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, test } from 'vitest'
import { reserveCid } from '../src/cid.js'
import type { ErrnoError } from '../src/errors.js'
import { hostHasVsock, localCid } from '../src/host.js'
import { assertDistFresh, distDir, tempDir } from './support.js'

const hasVhost = existsSync('/dev/vhost-vsock')

describe('hostHasVsock', () => {
  test.skipIf(hasVhost)('reports the missing device with the reason and the fix', () => {
    const r = hostHasVsock()
    expect(r.ok).toBe(false)
    expect(r.reason).toContain('/dev/vhost-vsock does not exist')
    expect(r.reason).toContain('modprobe vhost_vsock')
  })

  test('WSL is refused by /proc/version', () => {
    const dir = tempDir('vsock-host-')
    const version = join(dir, 'version')
    writeFileSync(version, 'Linux version 5.15.153.1-microsoft-standard-WSL2 (root@...) #1 SMP\n')
    const r = hostHasVsock({ procVersion: version, device: '/dev/null' })
    expect(r).toEqual({ ok: false, reason: expect.stringContaining('WSL') })
  })

  test('a path that is not a character device is refused', () => {
    const dir = tempDir('vsock-host-')
    writeFileSync(join(dir, 'vhost-vsock'), '')
    const r = hostHasVsock({ device: join(dir, 'vhost-vsock') })
    expect(r.ok).toBe(false)
    expect(r.reason).toContain('not a character device')
  })

  test('an openable character device passes (the check itself; /dev/null stands in)', () => {
    const r = hostHasVsock({ device: '/dev/null', procVersion: '/nonexistent' })
    expect(r).toEqual({ ok: true, reason: '/dev/null is present and opens read/write' })
  })

  test('non-Linux platforms are refused', () => {
    expect(hostHasVsock({ platform: 'darwin' }).ok).toBe(false)
  })

  // The check mb lacks: the device exists but this user cannot open it read/write.
  test.skipIf(process.getuid?.() !== 0)('a device this user cannot open read/write is refused with the permission fix', () => {
    assertDistFresh()
    const dir = tempDir('vsock-host-')
    const dev = join(dir, 'vhost-vsock')
    // A root-only character device (1:3 is /dev/null's major:minor), checked as `nobody`.
    const mk = spawnSync('mknod', ['-m', '0600', dev, 'c', '1', '3'])
    if (mk.status !== 0) return // no mknod in this container: nothing to check
    chmodSync(dir, 0o755)
    const script = `import(${JSON.stringify(join(distDir, 'host.js'))}).then((m) => console.log(JSON.stringify(m.hostHasVsock({ device: ${JSON.stringify(dev)} }))))`
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', uid: 65534, gid: 65534 })
    expect(r.stderr).toBe('')
    const out = JSON.parse(r.stdout) as { ok: boolean; reason: string }
    expect(out.ok).toBe(false)
    expect(out.reason).toContain('no read/write permission')
    expect(out.reason).toContain('mode 0600')
    expect(out.reason).toContain('uid 65534')
    expect(out.reason).toContain('kvm')
  })
})

describe('reserveCid on this host', () => {
  test.skipIf(hasVhost)('fails with ENOENT naming /dev/vhost-vsock and the module to load', () => {
    let err: ErrnoError | undefined
    try {
      reserveCid()
    } catch (e) {
      err = e as ErrnoError
    }
    expect(err).toBeDefined()
    expect(err!.code).toBe('ENOENT')
    expect(err!.errno).toBe(-2)
    expect(err!.syscall).toBe('open')
    expect(err!.path).toBe('/dev/vhost-vsock')
    expect(err!.message).toContain('/dev/vhost-vsock')
    expect(err!.message).toContain('modprobe vhost_vsock')
  })

  test('a device that is not vhost-vsock fails on the ioctl, not as "in use"', () => {
    // /dev/null opens read/write but has no VHOST_VSOCK_SET_GUEST_CID: ENOTTY.
    expect(() => reserveCid({ device: '/dev/null' })).toThrow(
      expect.objectContaining({ code: 'ENOTTY', syscall: 'ioctl', message: expect.stringContaining('VHOST_VSOCK_SET_GUEST_CID 3') }),
    )
  })
})

describe('AF_VSOCK on this host', () => {
  test('localCid() answers or fails with a code', () => {
    try {
      const cid = localCid()
      expect(Number.isInteger(cid)).toBe(true)
    } catch (e) {
      expect((e as ErrnoError).code).toMatch(/^E/)
    }
  })
  // No connect/listen here: without vsock_loopback the kernel routes even CID 1 to the
  // guest->host transport, and this machine may itself be a guest. Those run in the fixture
  // guest (test/guest/vsock-loopback.mjs); the error paths are in stream.test.ts with stubs.
})
