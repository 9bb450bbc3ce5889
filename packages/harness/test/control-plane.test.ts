import { describe, expect, test } from 'vitest'
import { parseSandboxOptions } from '../src/config/options.js'
import { HarnessError } from '../src/errors.js'
import { buildQemuArgv } from '../src/vmm/argv.js'
import { chooseControlPlane, planeInfo, type ControlPlane } from '../src/control/plane.js'
import { planNetwork } from '../src/vmm/network/plan.js'
import { VsockTransport } from '../src/control/vsock-transport.js'
import { vsockCheck } from '../src/doctor/doctor.js'
import { fakeVsock } from './support/fake-vsock.js'
import { after, qemuSpec } from './support/qemu-spec.js'

const forwards = [{ host: 8080, guest: 80, proto: 'tcp' as const }]

/** Hands out the given ports in order, as freePort would hand out free ones. */
function ports(...list: number[]): () => Promise<number> {
  return () => Promise.resolve(list.shift() ?? 0)
}

async function argvFor(plane: ControlPlane, mode: 'nat' | 'none' = 'nat'): Promise<string[]> {
  const net = await planNetwork({ plane, mode, forwards, agent: false, freePort: ports(2222) })
  return buildQemuArgv(qemuSpec({ accel: 'kvm', ...net.qemu }))
}

describe('control plane choice', () => {
  test('auto with a usable device: vsock, vhost-vsock-pci on fd 3 with the reserved CID, no :1024 forward', async () => {
    const fake = fakeVsock({ held: new Set([3]) })
    const lines: string[] = []
    const plane = await chooseControlPlane('auto', { load: fake.load, log: (l) => lines.push(l), noted: { done: false } })
    expect(plane.kind).toBe('vsock')
    if (plane.kind !== 'vsock') return
    expect(plane.cid).toBe(4)
    expect(lines).toEqual([])

    const argv = await argvFor(plane)
    expect(after(argv, '-device')).toContain('vhost-vsock-pci,vhostfd=3,guest-cid=4')
    const netdev = after(argv, '-netdev')[0]!
    expect(netdev).toContain('hostfwd=tcp:127.0.0.1:2222-:22')
    expect(netdev).not.toContain(':1024')

    expect(planeInfo(plane)).toEqual({ kind: 'vsock', cid: 4, port: 1024 })
    const transport = plane.transport
    expect(transport.kind).toBe('vsock')
    expect(transport.describe()).toBe('vsock cid 4 port 1024')
    await transport.connect(1234)
    expect(fake.connects).toEqual([{ cid: 4, port: 1024, timeoutMs: 1234 }])

    plane.release()
    plane.release()
    expect(fake.held).toEqual(new Set([3]))
  })

  test("network.mode 'none' with vsock: -nic none plus the vsock device", async () => {
    const fake = fakeVsock()
    const plane = await chooseControlPlane('auto', { load: fake.load, noted: { done: false } })
    const argv = await argvFor(plane, 'none')
    expect(after(argv, '-nic')).toEqual(['none'])
    // No NIC: the only devices are vmgenid (x86_64) and vsock.
    expect(after(argv, '-device')).toEqual(['vmgenid,guid=auto', 'vhost-vsock-pci,vhostfd=3,guest-cid=3'])
  })

  test('auto without the device: TCP with the :1024 forward, one log line per process saying why', async () => {
    const reason = '/dev/vhost-vsock does not exist: load the vhost_vsock kernel module (sudo modprobe vhost_vsock)'
    const fake = fakeVsock({ host: { ok: false, reason } })
    const lines: string[] = []
    const noted = { done: false }
    const plane = await chooseControlPlane('auto', { load: fake.load, log: (l) => lines.push(l), noted, freePort: ports(4444) })
    await chooseControlPlane('auto', { load: fake.load, log: (l) => lines.push(l), noted })
    expect(plane).toMatchObject({ kind: 'tcp', reason, port: 4444 })
    expect(lines).toHaveLength(1)
    expect(lines[0]).toContain('TCP')
    expect(lines[0]).toContain(reason)

    const argv = await argvFor(plane)
    expect(argv.join(' ')).not.toContain('vhost-vsock')
    expect(after(argv, '-netdev')[0]).toContain('hostfwd=tcp:127.0.0.1:4444-:1024')
    expect(planeInfo(plane)).toEqual({ kind: 'tcp', host: '127.0.0.1', port: 4444 })
    expect(plane.transport.describe()).toBe('tcp 127.0.0.1:4444')
  })

  test('auto where the addon cannot load: TCP, and the log line names the load error', async () => {
    const lines: string[] = []
    const fromBinding = fakeVsock({ addonError: new Error('no prebuilt @stereos/vsock addon for linux-riscv64') })
    const plane = await chooseControlPlane('auto', { load: fromBinding.load, log: (l) => lines.push(l), noted: { done: false } })
    expect(plane.kind).toBe('tcp')
    const noPackage = await chooseControlPlane('auto', {
      load: () => Promise.reject(new Error("Cannot find package '@stereos/vsock'")),
      log: (l) => lines.push(l),
      noted: { done: false },
    })
    expect(noPackage.kind).toBe('tcp')
    expect(lines[0]).toContain('linux-riscv64')
    expect(lines[1]).toContain("Cannot find package '@stereos/vsock'")
  })

  test("controlPlane 'vsock' on a host without it: HarnessError with the reason and the fix", async () => {
    const fake = fakeVsock({ host: { ok: false, reason: 'no read/write permission on /dev/vhost-vsock' } })
    const err = await chooseControlPlane('vsock', { load: fake.load, noted: { done: false } }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(HarnessError)
    expect((err as HarnessError).code).toBe('HOST')
    expect((err as HarnessError).message).toContain('no read/write permission on /dev/vhost-vsock')
    expect((err as HarnessError).fix).toContain('modprobe vhost_vsock')
    expect((err as HarnessError).fix).toContain('KERNEL=="vhost-vsock"')
  })

  test("controlPlane 'tcp' never loads the addon", async () => {
    const plane = await chooseControlPlane('tcp', { load: () => Promise.reject(new Error('must not load')), noted: { done: false } })
    expect(plane.kind).toBe('tcp')
  })

  test('concurrent boots in one process get distinct CIDs, and a released CID is reused', async () => {
    const fake = fakeVsock({ held: new Set([3, 5, 9]) }) // other VMs, other tools
    const planes = await Promise.all(Array.from({ length: 64 }, () => chooseControlPlane('auto', { load: fake.load, noted: { done: false } })))
    const cids = planes.map((p) => (p.kind === 'vsock' ? p.cid : -1))
    expect(new Set(cids).size).toBe(64)
    expect(cids.filter((c) => c === 3 || c === 5 || c === 9 || c < 3)).toEqual([])
    const fds = planes.map((p) => (p.kind === 'vsock' ? p.fd : -1))
    expect(new Set(fds).size).toBe(64)

    const first = planes[0]!
    if (first.kind !== 'vsock') throw new Error('expected vsock')
    first.release()
    const again = await chooseControlPlane('auto', { load: fake.load, noted: { done: false } })
    expect(again.kind === 'vsock' && again.cid).toBe(first.cid)
  })
})

describe('controlPlane option', () => {
  test("defaults to 'auto' and accepts only auto, vsock, tcp", () => {
    expect(parseSandboxOptions({}).controlPlane).toBe('auto')
    expect(parseSandboxOptions({ controlPlane: 'vsock' }).controlPlane).toBe('vsock')
    expect(() => parseSandboxOptions({ controlPlane: 'serial' })).toThrow(/options\.controlPlane/)
  })
})

describe('VsockTransport', () => {
  test('a connect timeout is a CONTROL_PLANE error, like TCP, so waitReady retries it', async () => {
    const fake = fakeVsock()
    fake.mod.connect = () => Promise.reject(Object.assign(new Error('connect ETIMEDOUT vsock 7:1024'), { code: 'ETIMEDOUT' }))
    const err = await new VsockTransport(7, 1024, fake.load).connect(50).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(HarnessError)
    expect((err as HarnessError).code).toBe('CONTROL_PLANE')
    expect((err as HarnessError).message).toContain('vsock cid 7 port 1024')
  })
})

describe('doctor vhost-vsock', () => {
  test('says which control plane auto uses', async () => {
    const ok = await vsockCheck(fakeVsock().load)
    expect(ok.status).toBe('ok')
    expect(ok.detail).toContain("controlPlane 'auto' uses vsock")
    const missing = await vsockCheck(fakeVsock({ host: { ok: false, reason: '/dev/vhost-vsock does not exist' } }).load)
    expect(missing.status).toBe('warn')
    expect(missing.detail).toContain("controlPlane 'auto' uses TCP")
    expect(missing.fix).toContain('modprobe vhost_vsock')
    const perms = await vsockCheck(fakeVsock({ host: { ok: false, reason: 'no read/write permission on /dev/vhost-vsock' } }).load)
    expect(perms.fix).toContain('KERNEL=="vhost-vsock"')
  })
})
