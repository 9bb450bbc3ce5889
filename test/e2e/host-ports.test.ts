import { randomUUID } from 'node:crypto'
import { createSocket } from 'node:dgram'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { HarnessError, Sandbox } from '@stereos/harness'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { runtimeDir } from './support.js'

/**
 * network.hostPorts in real VMs (fixture guest): two HTTP services on random ports on the host's
 * 127.0.0.1, one declared. The guest reaches the declared one as host.stereos.internal:<port>;
 * it reaches neither the undeclared one by that name (nor at its address) nor either of them
 * through SLIRP's host alias 10.0.2.2. Both layouts of QEMU's network: its own private
 * namespace (this host allows one), and the host's namespace (forced here by a UDP forward,
 * which only a host-namespace QEMU can carry: the fallback where no namespace can be made).
 */

// Runs in the guest: what the name resolves to, then an HTTP GET to each target; each prints
// the body or the error code ('timeout' after 5 s without an answer).
const PROBE = `
const http = require('node:http'), dns = require('node:dns')
const targets = JSON.parse(process.argv[1])
const get = (host, port) => new Promise((done) => {
  const req = http.get({ host, port, path: '/', timeout: 5000 }, (res) => {
    let body = ''
    res.on('data', (c) => (body += c))
    res.on('end', () => done('body:' + body))
  })
  req.on('timeout', () => { req.destroy(); done('timeout') })
  req.on('error', (e) => done(e.code || e.message))
})
dns.lookup('host.stereos.internal', { family: 4 }, async (err, address) => {
  const out = { lookup: err ? err.code : address }
  for (const [name, [host, port]] of Object.entries(targets)) out[name] = await get(host, port)
  console.log(JSON.stringify(out))
})
`

async function service(body: string): Promise<{ port: number; server: Server }> {
  const server = createServer((_req, res) => res.end(body))
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return { port: (server.address() as AddressInfo).port, server }
}

/** A UDP port free on 127.0.0.1 now (for the forward that keeps QEMU in the host's namespace). */
async function freeUdpPort(): Promise<number> {
  const socket = createSocket('udp4')
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve))
  const { port } = socket.address()
  await new Promise<void>((resolve) => socket.close(() => resolve()))
  return port
}

describe('network.hostPorts: the guest reaches declared host ports, and no other', () => {
  const runtime = runtimeDir()
  const declaredToken = `declared-${randomUUID()}`
  const undeclaredToken = `undeclared-${randomUUID()}`
  let declared: { port: number; server: Server }
  let undeclared: { port: number; server: Server }
  const sandboxes: Sandbox[] = []

  beforeAll(async () => {
    declared = await service(declaredToken)
    undeclared = await service(undeclaredToken)
  })

  afterAll(async () => {
    await Promise.allSettled(sandboxes.map((s) => s.shutdown({ timeoutMs: 15_000 })))
    declared?.server.close()
    undeclared?.server.close()
  })

  async function probe(sandbox: Sandbox): Promise<Record<string, string>> {
    const targets = {
      byName: ['host.stereos.internal', declared.port],
      undeclaredByName: ['host.stereos.internal', undeclared.port],
      undeclaredByAddress: ['10.0.2.100', undeclared.port],
      declaredViaHostAlias: ['10.0.2.2', declared.port],
      undeclaredViaHostAlias: ['10.0.2.2', undeclared.port],
    }
    const result = await sandbox.exec('node', ['-e', PROBE, JSON.stringify(targets)])
    expect(result.stderr).toBe('')
    return JSON.parse(result.stdout) as Record<string, string>
  }

  test.each([
    ['a private network namespace', false],
    ["the host's network namespace (fallback)", true],
  ])('QEMU in %s', async (_layout, hostNamespace) => {
    const forwards = hostNamespace ? [{ host: await freeUdpPort(), guest: 9999, proto: 'udp' as const }] : []
    const sandbox = await Sandbox.boot({ arch: 'x86_64', runtimeDir: runtime, network: { hostPorts: [declared.port], forwards } })
    sandboxes.push(sandbox)
    // A private namespace reaches stereosd through a unix socket, the host's through a TCP port.
    expect(sandbox.info.transport.kind).toBe(hostNamespace ? 'tcp' : 'unix')

    const seen = await probe(sandbox)
    expect(seen.lookup).toBe('10.0.2.100')
    expect(seen.byName).toBe(`body:${declaredToken}`)
    for (const closed of ['undeclaredByName', 'undeclaredByAddress', 'declaredViaHostAlias', 'undeclaredViaHostAlias']) {
      expect(seen[closed], closed).not.toMatch(/^body:/)
    }
    // The name is a line in the guest's /etc/hosts, a plain file.
    const hosts = await sandbox.exec('sh', ['-c', 'test ! -L /etc/hosts && grep host.stereos.internal /etc/hosts'])
    expect(hosts.stdout).toBe('10.0.2.100 host.stereos.internal\n')
  })

  test("mode 'none' with hostPorts: refused before anything boots", async () => {
    const boot = Sandbox.boot({ arch: 'x86_64', runtimeDir: runtime, network: { mode: 'none', hostPorts: [declared.port] } })
    await expect(boot).rejects.toThrow(HarnessError)
    await expect(boot).rejects.toThrow(/options\.network\.hostPorts: network\.mode 'none' reaches no host port/)
  })
})
