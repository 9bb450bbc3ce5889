import { describe, expect, test } from 'vitest'
import { chooseControlPlane } from '../src/control/plane.js'
import { planNetwork } from '../src/vmm/network/plan.js'
import { AGENT_PORT } from '../src/wire/messages.js'
import { fakeVsock } from './support/fake-vsock.js'

/** Hands out the given ports in order, as freePort would hand out free ones. */
function ports(...list: number[]): () => Promise<number> {
  return () => Promise.resolve(list.shift() ?? 0)
}

const userForward = { host: 8080, guest: 80, proto: 'tcp' as const }

describe('network plan', () => {
  test('TCP plane: SSH, stereosd, the user forwards and the agent through 127.0.0.1 forwards, each port reported', async () => {
    const plane = await chooseControlPlane('tcp', { freePort: ports(4000) })
    const net = await planNetwork({ plane, mode: 'nat', forwards: [userForward], agent: true, freePort: ports(4001, 4002) })
    expect(net.qemu).toEqual({
      network: {
        mode: 'user',
        restrict: false,
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
      network: { mode: 'user', restrict: false, forwards: [{ host: 4001, guest: 22, proto: 'tcp' }, userForward] },
      vsock: { cid: plane.cid, vhostfd: 3 },
    })
    expect(nat.ports).toEqual({ ssh: 4001, control: undefined, agent: undefined })
    expect(nat.agent?.describe()).toBe(`vsock cid ${plane.cid} port ${AGENT_PORT}`)
    const none = await planNetwork({ plane, mode: 'none', forwards: [], agent: true, load: fake.load })
    expect(none.qemu.network).toEqual({ mode: 'none' })
    expect(none.ports).toEqual({ ssh: undefined, control: undefined, agent: undefined })
    expect(none.ssh.describe()).toBe(`vsock cid ${plane.cid} port 22`)
  })
})
