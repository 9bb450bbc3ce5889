import { mkdtempSync, rmSync } from 'node:fs'
import { once } from 'node:events'
import { connect, createServer, type AddressInfo, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, test } from 'vitest'
import { listenHostForwards } from '../src/vmm/network/host-forwards.js'
import { chooseForwardScope, NAMESPACE_PORTS, privateForwards } from '../src/vmm/network/private-network.js'
import { chooseControlPlane } from '../src/control/plane.js'
import { planNetwork } from '../src/vmm/network/plan.js'
import { sshAccess } from '../src/vmm/network/ssh-access.js'
import { AGENT_PORT } from '../src/wire/messages.js'
import { heldHandles } from './support/held-handles.js'
import { fakeVsock } from './support/fake-vsock.js'

describe('chooseForwardScope', () => {
  test('private where the namespace can be made', async () => {
    const lines: string[] = []
    const scope = await chooseForwardScope(
      { nic: true, udpForwards: false },
      { probe: async () => ({ ok: true, userns: true, detail: '' }), log: (l) => lines.push(l), noted: { done: false } },
    )
    expect(scope).toEqual({ kind: 'private', userns: true })
    expect(lines).toEqual([])
  })

  test('falls back to host TCP forwards with one clear line naming who can connect and the fix', async () => {
    const lines: string[] = []
    const noted = { done: false }
    const deps = {
      probe: async () => ({ ok: false as const, userns: true, reason: 'unshare failed: Operation not permitted', fix: 'allow unprivileged user namespaces' }),
      log: (l: string) => lines.push(l),
      noted,
    }
    expect(await chooseForwardScope({ nic: true, udpForwards: false }, deps)).toEqual({ kind: 'host', reason: 'unshare failed: Operation not permitted' })
    await chooseForwardScope({ nic: true, udpForwards: false }, deps)
    expect(lines).toEqual([
      expect.stringMatching(
        /^QEMU's control-plane, agent and SSH forwards are TCP ports on 127\.0\.0\.1 that EVERY local user can connect to .*Operation not permitted\. Fix: allow unprivileged user namespaces$/,
      ),
    ])
  })

  test('UDP user forwards keep QEMU in the host namespace (the relay carries streams only)', async () => {
    const lines: string[] = []
    const scope = await chooseForwardScope(
      { nic: true, udpForwards: true },
      { probe: async () => ({ ok: true, userns: false, detail: '' }), log: (l) => lines.push(l), noted: { done: false } },
    )
    expect(scope.kind).toBe('host')
    expect(lines[0]).toMatch(/UDP forwards.*Fix: use TCP forwards/)
  })
})

test('privateForwards: every guest port behind a unix socket in the VM dir, user forwards on their host port', () => {
  const plan = privateForwards({ vmDir: '/run/vm', control: true, agent: true, agentPort: 1025, forwards: [{ host: 8080, guest: 80, proto: 'tcp' }] })
  expect(plan.qemu).toEqual([
    { host: NAMESPACE_PORTS.ssh, guest: 22, proto: 'tcp' },
    { host: NAMESPACE_PORTS.control, guest: 1024, proto: 'tcp' },
    { host: NAMESPACE_PORTS.agent, guest: 1025, proto: 'tcp' },
    { host: NAMESPACE_PORTS.firstUser, guest: 80, proto: 'tcp' },
  ])
  expect(plan.relay.map((r) => r.path)).toEqual(['/run/vm/ssh.sock', '/run/vm/control.sock', '/run/vm/agent.sock', '/run/vm/forward-0.sock'])
  expect(plan.host).toEqual([{ port: 8080, socket: '/run/vm/forward-0.sock', option: 'options.network.forwards.0' }])
  expect(plan.transports.control?.describe()).toBe('unix /run/vm/control.sock (guest port 1024)')
  const vsock = privateForwards({ vmDir: '/run/vm', control: false, agent: false, agentPort: 1025, forwards: [] })
  expect(vsock.sockets).toEqual({ control: undefined, agent: undefined, ssh: '/run/vm/ssh.sock' })
})

describe('listenHostForwards', () => {
  test('a host port the user asked for reaches the relay socket; closing ends it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'host-fwd-'))
    const socket = join(dir, 'forward-0.sock')
    const relay = createServer((s) => s.end('from the guest side\n'))
    await new Promise<void>((resolve) => relay.listen(socket, resolve))
    const probe = createServer()
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve))
    const port = (probe.address() as AddressInfo).port
    await new Promise((resolve) => probe.close(resolve))
    const forwarder = await listenHostForwards([{ port, socket, option: 'options.network.forwards.0' }])
    try {
      const c = connect({ host: '127.0.0.1', port })
      let text = ''
      for await (const chunk of c) text += String(chunk)
      expect(text).toBe('from the guest side\n')
    } finally {
      forwarder.close()
      relay.close()
      rmSync(dir, { recursive: true, force: true })
    }
    await expect(new Promise((resolve, reject) => connect({ host: '127.0.0.1', port }).once('connect', resolve).once('error', reject))).rejects.toMatchObject({
      code: 'ECONNREFUSED',
    })
  })

  test('after unref() the forward holds this process open no more (connections open then or made later included) and still carries bytes (#20)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'host-fwd-'))
    const socket = join(dir, 'forward-0.sock')
    const guestSide: Socket[] = []
    // Keeps each connection open; its end is this test's, not the forwarder's, so it is let go here.
    const relay = createServer((s) => {
      guestSide.push(s)
      s.unref()
      s.write('hi\n')
    })
    await new Promise<void>((resolve) => relay.listen(socket, resolve))
    relay.unref()
    const probe = createServer()
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve))
    const port = (probe.address() as AddressInfo).port
    await new Promise((resolve) => probe.close(resolve))
    const clients: Socket[] = []
    /** A connection through the forward, once the guest side has answered; this test's end let go. */
    const open = async () => {
      const c = connect({ host: '127.0.0.1', port })
      clients.push(c)
      c.unref()
      const [chunk] = (await once(c, 'data')) as [Buffer]
      return String(chunk)
    }
    const before = heldHandles()
    const forwarder = await listenHostForwards([{ port, socket, option: 'options.network.forwards.0' }])
    try {
      expect(await open()).toBe('hi\n')
      // The listener, and the open connection's two sockets (accepted TCP, unix to the relay).
      const forwarders = heldHandles().filter((h) => !before.includes(h))
      expect(forwarders).toHaveLength(3)
      forwarder.unref()
      expect(heldHandles().filter((h) => forwarders.includes(h))).toEqual([])
      const later = heldHandles()
      expect(await open()).toBe('hi\n')
      expect(heldHandles().filter((h) => !later.includes(h))).toEqual([])
    } finally {
      for (const c of [...clients, ...guestSide]) c.destroy()
      forwarder.close()
      relay.close()
      rmSync(dir, { recursive: true, force: true })
    }
  })

  test('a port already in use fails with the option path', async () => {
    const busy = createServer()
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve))
    const port = (busy.address() as AddressInfo).port
    try {
      await expect(listenHostForwards([{ port, socket: '/nonexistent', option: 'options.network.forwards.2' }])).rejects.toMatchObject({
        code: 'INVALID_OPTIONS',
        message: expect.stringContaining(`options.network.forwards.2.host: port ${port} on 127.0.0.1 cannot be listened on (EADDRINUSE)`),
        fix: 'pick a free port for the forward',
      })
    } finally {
      busy.close()
    }
  })
})

describe('planNetwork with a private scope', () => {
  const ports =
    (...list: number[]) =>
    () =>
      Promise.resolve(list.shift() ?? 0)

  test('TCP plane: stereosd, the agent and sshd behind unix sockets; no host ports; user forwards on their own host port', async () => {
    const plane = await chooseControlPlane('tcp', { freePort: ports(4000) })
    const net = await planNetwork({
      plane,
      mode: 'nat',
      forwards: [{ host: 8080, guest: 80, proto: 'tcp' }],
      agent: true,
      scope: { kind: 'private', userns: true },
      vmDir: '/run/vm',
    })
    expect(net.qemu).toEqual({
      network: {
        mode: 'user',
        restrict: false,
        forwards: [
          { host: NAMESPACE_PORTS.ssh, guest: 22, proto: 'tcp' },
          { host: NAMESPACE_PORTS.control, guest: 1024, proto: 'tcp' },
          { host: NAMESPACE_PORTS.agent, guest: AGENT_PORT, proto: 'tcp' },
          { host: NAMESPACE_PORTS.firstUser, guest: 80, proto: 'tcp' },
        ],
      },
    })
    expect(net.ports).toEqual({ ssh: undefined, control: undefined, agent: undefined })
    expect(net.sockets).toEqual({ ssh: '/run/vm/ssh.sock', control: '/run/vm/control.sock', agent: '/run/vm/agent.sock' })
    expect(net.controlInfo).toEqual({ kind: 'unix', path: '/run/vm/control.sock', port: 1024 })
    expect([net.control, net.agent, net.ssh].map((t) => t?.kind)).toEqual(['unix', 'unix', 'unix'])
    expect(net.netns).toMatchObject({ userns: true, egress: true, hostForwards: [{ port: 8080, socket: '/run/vm/forward-0.sock' }] })
  })

  test("mode 'none' keeps restrict=on and asks for no egress", async () => {
    const plane = await chooseControlPlane('tcp', { freePort: ports(4000) })
    const net = await planNetwork({ plane, mode: 'none', forwards: [], agent: false, scope: { kind: 'private', userns: false }, vmDir: '/run/vm' })
    expect(net.qemu.network).toMatchObject({ mode: 'user', restrict: true })
    expect(net.netns?.egress).toBe(false)
    expect(net.agent).toBeUndefined()
  })

  test('vsock plane: stereosd and the agent stay on vsock, sshd goes through the relay', async () => {
    const fake = fakeVsock()
    const plane = await chooseControlPlane('vsock', { load: fake.load, noted: { done: false } })
    const net = await planNetwork({
      plane,
      mode: 'nat',
      forwards: [],
      agent: true,
      load: fake.load,
      scope: { kind: 'private', userns: true },
      vmDir: '/run/vm',
    })
    expect(net.controlInfo.kind).toBe('vsock')
    expect(net.agent?.kind).toBe('vsock')
    expect(net.ssh.describe()).toBe('unix /run/vm/ssh.sock (guest port 22)')
    expect(net.qemu.vsock).toBeDefined()
  })

  test('without a scope: host TCP forwards, as before', async () => {
    const plane = await chooseControlPlane('tcp', { freePort: ports(4000) })
    const net = await planNetwork({ plane, mode: 'nat', forwards: [], agent: false, freePort: ports(4001) })
    expect(net.netns).toBeUndefined()
    expect(net.controlInfo).toEqual({ kind: 'tcp', host: '127.0.0.1', port: 4000 })
    expect(net.sockets).toEqual({ ssh: undefined, control: undefined, agent: undefined })
  })
})

describe('sshAccess', () => {
  test('through the relay: ssh args carry a ProxyCommand that connects to the socket', () => {
    const ssh = sshAccess({ socket: "/run/it's/ssh.sock", port: undefined }, '/run/vm/ssh_key', 'vm-1')
    expect(ssh).toMatchObject({ via: 'unix', socket: "/run/it's/ssh.sock", user: 'admin' })
    expect(ssh?.args.slice(0, 2)).toEqual(['-i', '/run/vm/ssh_key'])
    expect(ssh?.args).toContain(`ProxyCommand=${ssh?.via === 'unix' ? ssh.proxyCommand : ''}`)
    expect(ssh?.args.at(-1)).toBe('admin@vm-1')
    // Quoted for the shell ssh runs it with.
    expect(ssh?.via === 'unix' && ssh.proxyCommand.endsWith(`'/run/it'\\''s/ssh.sock'`)).toBe(true)
  })

  test('through a host port, and none without either', () => {
    expect(sshAccess({ socket: undefined, port: 2222 }, '/k', 'vm-1')?.args.slice(-3)).toEqual(['-p', '2222', 'admin@127.0.0.1'])
    expect(sshAccess({ socket: undefined, port: undefined }, '/k', 'vm-1')).toBeUndefined()
  })
})
