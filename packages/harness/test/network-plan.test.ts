import { describe, expect, test } from 'vitest'
import { chooseControlPlane } from '../src/control/plane.js'
import { HOST_ADDRESS } from '../src/vmm/network/host-ports.js'
import { planNetwork } from '../src/vmm/network/plan.js'
import { AGENT_PORT } from '../src/wire/messages.js'
import { fakeVsock } from './support/fake-vsock.js'

/** Hands out the given ports in order, as freePort would hand out free ones. */
function ports(...list: number[]): () => Promise<number> {
  return () => Promise.resolve(list.shift() ?? 0)
}

const userForward = { host: 8080, guest: 80, proto: 'tcp' as const }

describe('network plan', () => {
  test("TCP plane: SSH, stereosd, the user forwards and the agent through 127.0.0.1 forwards, each port reported; restrict=on in mode 'nat' too", async () => {
    const plane = await chooseControlPlane('tcp', { freePort: ports(4000) })
    const net = await planNetwork({ plane, mode: 'nat', forwards: [userForward], agent: true, freePort: ports(4001, 4002) })
    // In the host's namespace SLIRP would map 10.0.2.2 to the host's 127.0.0.1: only restrict=on closes it.
    expect(net.qemu).toEqual({
      network: {
        mode: 'user',
        restrict: true,
        forwards: [
          { host: 4001, guest: 22, proto: 'tcp' },
          { host: 4000, guest: 1024, proto: 'tcp' },
          userForward,
          { host: 4002, guest: AGENT_PORT, proto: 'tcp' },
        ],
      },
    })
    expect(net.ports).toEqual({ ssh: 4001, control: 4000, agent: 4002 })
    expect(net.agent?.describe()).toBe('tcp 127.0.0.1:4002')
    expect(net.ssh.describe()).toBe('tcp 127.0.0.1:4001')
  })

  test("TCP plane with mode 'none': the same forwards, and restrict=on so the guest itself reaches nothing", async () => {
    const plane = await chooseControlPlane('tcp', { freePort: ports(4000) })
    const net = await planNetwork({ plane, mode: 'none', forwards: [], agent: true, freePort: ports(4001, 4002) })
    expect(net.qemu.network).toEqual({
      mode: 'user',
      restrict: true,
      forwards: [
        { host: 4001, guest: 22, proto: 'tcp' },
        { host: 4000, guest: 1024, proto: 'tcp' },
        { host: 4002, guest: AGENT_PORT, proto: 'tcp' },
      ],
    })
    expect(net.ports).toEqual({ ssh: 4001, control: 4000, agent: 4002 })
  })

  test('no agent asked for: no agent port, no agent endpoint', async () => {
    const plane = await chooseControlPlane('tcp', { freePort: ports(4000) })
    const net = await planNetwork({ plane, mode: 'nat', forwards: [], agent: false, freePort: ports(4001) })
    expect(net.ports).toEqual({ ssh: 4001, control: 4000, agent: undefined })
    expect(net.agent).toBeUndefined()
  })

  test('vsock plane: stereosd and the agent by CID; SSH forwarded with nat, over vsock with none', async () => {
    const fake = fakeVsock()
    const plane = await chooseControlPlane('vsock', { load: fake.load, noted: { done: false } })
    if (plane.kind !== 'vsock') throw new Error('expected vsock')
    const nat = await planNetwork({ plane, mode: 'nat', forwards: [userForward], agent: true, load: fake.load, freePort: ports(4001) })
    expect(nat.qemu).toEqual({
      network: { mode: 'user', restrict: true, forwards: [{ host: 4001, guest: 22, proto: 'tcp' }, userForward] },
      vsock: { cid: plane.cid, vhostfd: 3 },
    })
    expect(nat.ports).toEqual({ ssh: 4001, control: undefined, agent: undefined })
    expect(nat.agent?.describe()).toBe(`vsock cid ${plane.cid} port ${AGENT_PORT}`)
    const none = await planNetwork({ plane, mode: 'none', forwards: [], agent: true, load: fake.load })
    expect(none.qemu.network).toEqual({ mode: 'none' })
    expect(none.ports).toEqual({ ssh: undefined, control: undefined, agent: undefined })
    expect(none.ssh.describe()).toBe(`vsock cid ${plane.cid} port 22`)
  })

  describe('hostPorts: a guestfwd per declared port at HOST_ADDRESS, reaching a socket in the VM dir', () => {
    const vmDir = '/run/vm-1'
    const declared = (port: number) => ({
      addr: HOST_ADDRESS,
      port,
      command: [process.execPath, expect.stringMatching(/unix-stdio\.(js|ts)$/), '--guest', `${vmDir}/host-port-${port}.sock`],
    })

    test('TCP plane, host namespace: restrict=on keeps every other host port closed; guestfwd passes the declared ones', async () => {
      const plane = await chooseControlPlane('tcp', { freePort: ports(4000) })
      const net = await planNetwork({ plane, mode: 'nat', forwards: [], hostPorts: [5432, 6379], agent: false, freePort: ports(4001), vmDir })
      expect(net.qemu.network).toMatchObject({ mode: 'user', restrict: true, guestForwards: [declared(5432), declared(6379)] })
      expect(net.hostPorts).toEqual([
        { port: 5432, socket: `${vmDir}/host-port-5432.sock` },
        { port: 6379, socket: `${vmDir}/host-port-6379.sock` },
      ])
    })

    test('vsock plane, host namespace: the same', async () => {
      const fake = fakeVsock()
      const plane = await chooseControlPlane('vsock', { load: fake.load, noted: { done: false } })
      const net = await planNetwork({ plane, mode: 'nat', forwards: [], hostPorts: [5432], agent: true, load: fake.load, freePort: ports(4001), vmDir })
      expect(net.qemu.network).toMatchObject({ mode: 'user', restrict: true, guestForwards: [declared(5432)] })
      expect(net.hostPorts).toEqual([{ port: 5432, socket: `${vmDir}/host-port-5432.sock` }])
    })

    test.each(['tcp', 'vsock'] as const)('%s plane, private namespace: guestfwd beside the relay, no TCP listener of ours', async (kind) => {
      const fake = fakeVsock()
      const plane = await chooseControlPlane(kind, { load: fake.load, noted: { done: false }, freePort: ports(4000) })
      const net = await planNetwork({
        plane,
        mode: 'nat',
        forwards: [],
        hostPorts: [5432],
        agent: true,
        load: fake.load,
        scope: { kind: 'private', userns: true },
        vmDir,
      })
      expect(net.qemu.network).toMatchObject({ mode: 'user', restrict: false, guestForwards: [declared(5432)] })
      expect(net.hostPorts).toEqual([{ port: 5432, socket: `${vmDir}/host-port-5432.sock` }])
      expect(net.netns?.relay.map((r) => r.path)).not.toContain(`${vmDir}/host-port-5432.sock`)
    })

    test("mode 'none' gets no guestfwd, even if asked (options refuse that before)", async () => {
      const plane = await chooseControlPlane('tcp', { freePort: ports(4000) })
      const net = await planNetwork({ plane, mode: 'none', forwards: [], hostPorts: [5432], agent: false, freePort: ports(4001), vmDir })
      expect(net.qemu.network).not.toHaveProperty('guestForwards')
      expect(net.hostPorts).toEqual([])
    })

    test('no hostPorts: no guestfwd, nothing to listen on', async () => {
      const plane = await chooseControlPlane('tcp', { freePort: ports(4000) })
      const net = await planNetwork({ plane, mode: 'nat', forwards: [], agent: false, freePort: ports(4001), vmDir })
      expect(net.qemu.network).not.toHaveProperty('guestForwards')
      expect(net.hostPorts).toEqual([])
    })
  })
})
