import { mkdtempSync, readFileSync, realpathSync, rmSync, symlinkSync, writeFileSync, lstatSync, statSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import { type AddressInfo, createServer as createNetServer, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { execa } from 'execa'
import { afterEach, describe, expect, test } from 'vitest'
import { parseSandboxOptions } from '../src/config/options.js'
import { HOSTS_SCRIPT } from '../src/sandbox/host-name.js'
import { HOST_ADDRESS, listenHostPorts, planHostPorts, type HostPortListeners } from '../src/vmm/network/host-ports.js'

const cleanups: (() => void)[] = []
afterEach(() => {
  for (const cleanup of cleanups.splice(0)) cleanup()
})

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'host-ports-'))
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

async function httpServer(body: string): Promise<number> {
  const server: Server = createServer((_req, res) => res.end(body))
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  cleanups.push(() => server.close())
  return (server.address() as AddressInfo).port
}

/** What QEMU does per guest connection: run the guestfwd command with the connection as stdin/stdout. */
async function guestConnection(command: string[], request: string): Promise<{ exitCode: number | undefined; stdout: string }> {
  const [file, ...args] = command
  const result = await execa(file as string, args, { input: request, reject: false, timeout: 20_000 })
  return { exitCode: result.exitCode, stdout: `${result.stdout}` }
}

const GET = 'GET / HTTP/1.1\r\nHost: host.stereos.internal\r\nConnection: close\r\n\r\n'

describe('declared host ports: guestfwd command → unix socket → the harness → 127.0.0.1:<port>', () => {
  test('a connection through the plan reaches the declared port and nothing else', async () => {
    const declared = await httpServer('declared service')
    const undeclared = await httpServer('undeclared service')
    const dir = tempDir()
    const plan = planHostPorts([declared], dir)
    const listeners: HostPortListeners = await listenHostPorts(plan.listen)
    cleanups.push(() => listeners.stop())

    expect(plan.qemu).toHaveLength(1)
    expect(plan.qemu[0]?.addr).toBe(HOST_ADDRESS)
    expect(plan.qemu[0]?.port).toBe(declared)
    const reply = await guestConnection(plan.qemu[0]?.command ?? [], GET)
    expect(reply.stdout).toContain('declared service')
    expect(reply.stdout).not.toContain('undeclared service')
    // Only the declared port has a socket; it is this user's alone.
    expect(statSync(plan.listen[0]?.socket ?? '').mode & 0o777).toBe(0o600)
    expect(plan.listen.map((l) => l.port)).not.toContain(undeclared)
  })

  test('nothing listening on the declared port: the connection ends, and nothing is printed to the guest', async () => {
    const closed = await httpServer('gone')
    const dir = tempDir()
    const plan = planHostPorts([closed], dir)
    const listeners = await listenHostPorts(plan.listen)
    cleanups.push(() => listeners.stop())
    cleanups.splice(0, 1)[0]?.() // close the service before the guest connects
    const reply = await guestConnection(plan.qemu[0]?.command ?? [], GET)
    expect(reply.stdout).toBe('')
  })

  test('past the cap of open connections per port, a new one ends at once; the open ones go on', async () => {
    // A service that holds every connection open, saying nothing until told.
    const held: Socket[] = []
    const server = createNetServer({ allowHalfOpen: true }, (socket) => held.push(socket))
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    cleanups.push(() => server.close())
    const port = (server.address() as AddressInfo).port
    const plan = planHostPorts([port], tempDir())
    const listeners = await listenHostPorts(plan.listen, 2)
    cleanups.push(() => listeners.stop())
    const command = plan.qemu[0]?.command ?? []
    const first = guestConnection(command, '')
    const second = guestConnection(command, '')
    await expect.poll(() => held.length, { timeout: 15_000 }).toBe(2)
    // Two are open: a third is over the cap and never reaches the service.
    const third = await guestConnection(command, '')
    expect(third.stdout).toBe('')
    expect(held).toHaveLength(2)
    for (const socket of held) socket.end('held service')
    expect((await first).stdout).toBe('held service')
    expect((await second).stdout).toBe('held service')
  })

  test('the harness gone (a stopped VM): the command exits at once, silently', async () => {
    const dir = tempDir()
    const plan = planHostPorts([9], dir)
    const reply = await guestConnection(plan.qemu[0]?.command ?? [], GET)
    expect(reply.stdout).toBe('')
    expect(reply.exitCode).not.toBe(0)
  })
})

describe('options', () => {
  test('hostPorts default to none; a list of ports is kept', () => {
    expect(parseSandboxOptions({}).network.hostPorts).toEqual([])
    expect(parseSandboxOptions({ network: { hostPorts: [5432, 8080] } }).network.hostPorts).toEqual([5432, 8080])
  })

  test.each([
    [{ mode: 'none', hostPorts: [5432] }, "options.network.hostPorts: network.mode 'none' reaches no host port"],
    [{ hostPorts: [5432, 5432] }, 'options.network.hostPorts: each port at most once'],
    [{ hostPorts: [0] }, 'options.network.hostPorts.0'],
    [{ hostPorts: [70000] }, 'options.network.hostPorts.0'],
  ])('refused: %j', (network, message) => {
    expect(() => parseSandboxOptions({ network })).toThrow(message)
  })
})

describe("the guest's hosts entry (HOSTS_SCRIPT, run here against a stand-in /etc)", () => {
  /** The script with /etc/ pointed at a temporary directory. */
  async function runHostsScript(etc: string): Promise<void> {
    await execa('sh', ['-c', HOSTS_SCRIPT.replaceAll('/etc/', `${etc}/`)])
  }

  test('a plain file: the line is added once, other lines kept', async () => {
    const etc = tempDir()
    writeFileSync(join(etc, 'hosts'), '127.0.0.1 localhost\n10.9.9.9 host.stereos.internal\n')
    await runHostsScript(etc)
    await runHostsScript(etc)
    expect(readFileSync(join(etc, 'hosts'), 'utf8')).toBe(`127.0.0.1 localhost\n${HOST_ADDRESS} host.stereos.internal\n`)
  })

  test('a link into a read-only store (NixOS): the link is replaced by a file, its target untouched', async () => {
    const etc = tempDir()
    const store = tempDir()
    writeFileSync(join(store, 'hosts'), '127.0.0.1 localhost\n')
    symlinkSync(join(store, 'hosts'), join(etc, 'hosts'))
    await runHostsScript(etc)
    expect(lstatSync(join(etc, 'hosts')).isSymbolicLink()).toBe(false)
    expect(readFileSync(join(etc, 'hosts'), 'utf8')).toBe(`127.0.0.1 localhost\n${HOST_ADDRESS} host.stereos.internal\n`)
    expect(readFileSync(realpathSync(join(store, 'hosts')), 'utf8')).toBe('127.0.0.1 localhost\n')
  })

  test('no /etc/hosts at all: one is made', async () => {
    const etc = tempDir()
    await runHostsScript(etc)
    expect(readFileSync(join(etc, 'hosts'), 'utf8')).toBe(`${HOST_ADDRESS} host.stereos.internal\n`)
  })
})
