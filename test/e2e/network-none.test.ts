import { Sandbox, type SandboxInfo } from '@stereos/harness'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { NAMESPACE_PORTS } from '../../packages/harness/src/vmm/network/private-network.js'
import { runtimeDir } from './support.js'

/**
 * network: { mode: 'none' } on a host without vsock (this one): SLIRP with restrict=on. The
 * guest must reach nothing beyond itself, while the host's forwards (control plane, agent, SSH)
 * keep working. Only addresses SLIRP itself emulates are probed (10.0.2.2 = QEMU's host side,
 * 10.0.2.3 = its DNS relay to the outside); nothing real outside is contacted. The host-side
 * target is QEMU's own listener for stereosd's forward (on the host's 127.0.0.1, or in QEMU's
 * private network namespace): a port that certainly answers whenever 10.0.2.2 is reachable.
 */

// Runs in the guest: a TCP connect to a listening host-side port through SLIRP's host alias, a
// DNS query to SLIRP's relay, and a connect to the guest's own agent port (the probe can connect). Each prints its outcome; 3 s without an answer is 'timeout'.
const PROBE = `
const net = require('node:net'), dgram = require('node:dgram')
const [port, ownPort] = process.argv.slice(1).map(Number)
const tcp = (host, p) => new Promise((done) => {
  const s = net.connect({ host, port: p })
  const t = setTimeout(() => { s.destroy(); done('timeout') }, 3000)
  s.on('connect', () => { clearTimeout(t); s.destroy(); done('connected') })
  s.on('error', (e) => { clearTimeout(t); done(e.code) })
})
const dns = () => new Promise((done) => {
  const sock = dgram.createSocket('udp4')
  const query = Buffer.from('123401000001000000000000096c6f63616c686f73740000010001', 'hex')
  const t = setTimeout(() => { sock.close(); done('timeout') }, 3000)
  sock.on('message', () => { clearTimeout(t); sock.close(); done('answered') })
  sock.on('error', (e) => { clearTimeout(t); sock.close(); done(e.code) })
  sock.send(query, 53, '10.0.2.3')
})
Promise.all([tcp('10.0.2.2', port), dns(), tcp('10.0.2.15', ownPort)]).then(([host, dnsRelay, self]) => console.log(JSON.stringify({ host, dnsRelay, self })))
`

interface Probe {
  host: string
  dnsRelay: string
  self: string
}

/** Where QEMU listens for stereosd's forward, as seen from its own network namespace. */
function hostSidePort(info: SandboxInfo): number {
  return info.transport.kind === 'tcp' ? info.transport.port : NAMESPACE_PORTS.control
}

async function probe(sandbox: Sandbox): Promise<Probe> {
  // The agent listens on its guest port on every interface: a connect the probe must be able to make.
  const r = await sandbox.exec('node', ['-e', PROBE, String(hostSidePort(sandbox.info)), '1025'])
  expect(r.stderr).toBe('')
  return JSON.parse(r.stdout) as Probe
}

describe("network.mode 'none' without vsock", () => {
  const runtime = runtimeDir()
  let isolated: Sandbox
  let nat: Sandbox

  beforeAll(async () => {
    isolated = await Sandbox.boot({ arch: 'x86_64', runtimeDir: runtime, network: { mode: 'none' } })
  })

  afterAll(async () => {
    await isolated?.shutdown({ timeoutMs: 15_000 })
    await nat?.shutdown({ timeoutMs: 15_000 })
  })

  test('boots without vsock; stereosd, the agent and SSH answer through the host forwards', async () => {
    expect(isolated.info.transport.kind).not.toBe('vsock')
    expect((await isolated.control.health()).state).toMatch(/ready|healthy/)
    expect((await isolated.exec('id', ['-un'])).stdout).toBe('agent\n')
    // Boot resolves only after an SSH handshake with the per-VM key through the forward.
    expect(isolated.ssh).toBeDefined()
    expect(isolated.info.timeline.map((e) => e.phase)).toEqual(expect.arrayContaining(['agent-ready', 'ssh-ready']))
  })

  test('the guest reaches neither the host side (10.0.2.2) nor the DNS relay (10.0.2.3); it still reaches itself', async () => {
    const result = await probe(isolated)
    expect(result.self).toBe('connected')
    expect(result.host).not.toBe('connected')
    expect(result.dnsRelay).toBe('timeout')
  })

  test("control: under mode 'nat' the same probe reaches the host side in QEMU's private namespace (its own listener there)", async () => {
    nat = await Sandbox.boot({ arch: 'x86_64', runtimeDir: runtime })
    const result = await probe(nat)
    expect(result.self).toBe('connected')
    // In the host's namespace (no private one can be made) 10.0.2.2 would be the host's own
    // 127.0.0.1, so QEMU runs restrict=on there in mode 'nat' too (host-ports.test.ts).
    if (nat.info.transport.kind === 'unix') expect(result.host).toBe('connected')
    else expect(result.host).not.toBe('connected')
  })
})
