import { ChildProcess, spawn } from 'node:child_process'
import {
  chmodSync,
  closeSync,
  existsSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  realpathSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs'
import { connect, createServer, type AddressInfo } from 'node:net'
import { networkInterfaces, tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { execa } from 'execa'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { UnixTransport } from '../src/control/unix-transport.js'
import { TcpTransport } from '../src/control/transport.js'
import { defaultUserns, netnsCommand, probeNetns } from '../src/vmm/network/netns.js'
import { egressAvailable, startEgress } from '../src/vmm/network/netns-egress.js'
import { isAlive } from '../src/host/process.js'
import { spawnQemu } from '../src/vmm/qemu-process.js'
import { VHOST_FD_IN_CHILD } from '../src/control/plane.js'
import { heldHandles } from './support/held-handles.js'
import { ATTACK_SCRIPT, createSecondUser, secondUserSkipReason, type SecondUser } from './support/second-user.js'

/**
 * QEMU's private network namespace, with real processes: a stand-in for QEMU (a TCP server on
 * the namespace's 127.0.0.1, as SLIRP's hostfwd listens) started by the same wrapper QEMU is,
 * and the real relay. No VM: test/security/local-users.test.ts boots the fixture.
 */

const INNER_PORT = 11024
/** Answers each connection with the network namespace it runs in and its capabilities. */
const STAND_IN = `
const { createServer } = require('node:net')
const { readFileSync, readlinkSync } = require('node:fs')
createServer((s) => {
  const caps = /CapEff:\\s*(\\S+)/.exec(readFileSync('/proc/self/status', 'utf8'))[1]
  s.end(JSON.stringify({ netns: readlinkSync('/proc/self/ns/net'), caps }) + '\\n')
}).listen(${INNER_PORT}, '127.0.0.1')
`

const support = await probeNetns()
const skip = support.ok ? undefined : support.reason

interface Started {
  pid: number
  dir: string
  socket: string
  exited: Promise<unknown>
  kill(): void
}

function startStandIn(userns?: boolean): Started {
  const dir = realpathSync(mkdtempSync(join(tmpdir(), 'netns-')))
  chmodSync(dir, 0o700)
  const socket = join(dir, 'control.sock')
  const { file, args } = netnsCommand({
    binary: process.execPath,
    argv: ['-e', STAND_IN],
    forwards: [{ path: socket, port: INNER_PORT }],
    ...(userns === undefined ? {} : { userns }),
  })
  const child = execa(file, args, { reject: false, stdio: 'inherit' })
  return { pid: child.pid!, dir, socket, exited: child, kill: () => child.kill('SIGKILL') }
}

async function ask(transport: UnixTransport | TcpTransport): Promise<{ netns: string; caps: string }> {
  const socket = await transport.connect(2_000)
  let text = ''
  for await (const chunk of socket) text += String(chunk)
  return JSON.parse(text) as { netns: string; caps: string }
}

/** Through the relay, retrying while the stand-in and the relay come up (as waitReady does). */
async function askWhenUp(transport: UnixTransport): Promise<{ netns: string; caps: string }> {
  for (let i = 0; ; i++) {
    try {
      return await ask(transport)
    } catch (err) {
      if (i > 200) throw err
      await sleep(25)
    }
  }
}

describe.skipIf(skip)('QEMU in a private network namespace', () => {
  test.each([
    ['as this user would (root: a network namespace; others: user + network)', undefined],
    ['with a user namespace, capabilities dropped', true],
  ])('%s: the forward is a 0600 unix socket; nothing listens on the host', async (_, userns) => {
    const vm = startStandIn(userns)
    try {
      const answer = await askWhenUp(new UnixTransport(vm.socket, 1024))
      expect(answer.netns).not.toBe(readlinkSync('/proc/self/ns/net'))
      expect(answer.netns).toBe(readlinkSync(`/proc/${vm.pid}/ns/net`))
      if (userns) expect(answer.caps).toBe('0000000000000000')
      expect(statSync(vm.socket).mode & 0o777).toBe(0o600)
      // The namespace's 127.0.0.1 is not the host's: the same port here is closed.
      await expect(ask(new TcpTransport('127.0.0.1', INNER_PORT))).rejects.toMatchObject({ code: 'ECONNREFUSED' })
    } finally {
      vm.kill()
      await vm.exited
      rmSync(vm.dir, { recursive: true, force: true })
    }
  })

  test('the stand-in keeps the spawned PID and dies with its runner, relay included, on SIGKILL', async () => {
    const dir = realpathSync(mkdtempSync(join(tmpdir(), 'netns-')))
    const socket = join(dir, 'control.sock')
    const { file, args } = netnsCommand({ binary: process.execPath, argv: ['-e', STAND_IN], forwards: [{ path: socket, port: INNER_PORT }] })
    // A runner that starts the wrapped stand-in, reports its PID, and is then SIGKILLed.
    const runner = spawn(
      process.execPath,
      [
        '-e',
        `const c = require('node:child_process').spawn(${JSON.stringify(file)}, ${JSON.stringify(args)}, { stdio: 'inherit' }); console.log(c.pid); setInterval(() => {}, 1000)`,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    )
    try {
      const pid = Number((await new Promise<Buffer>((resolve) => runner.stdout.once('data', resolve))).toString().trim())
      await askWhenUp(new UnixTransport(socket, 1024))
      // The process that answers is the one spawned: unshare, sh and setpriv exec'd into it.
      expect(readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')).toContain(STAND_IN)
      const relay = childPids(pid)
      expect(relay.length).toBe(1)
      runner.kill('SIGKILL')
      for (let i = 0; i < 400 && (isAlive(pid) || relay.some(isAlive)); i++) await sleep(25)
      expect(isAlive(pid)).toBe(false)
      expect(relay.some(isAlive)).toBe(false)
    } finally {
      runner.kill('SIGKILL')
      rmSync(dir, { recursive: true, force: true })
    }
  })
})

function childPids(pid: number): number[] {
  const children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim()
  return children ? children.split(/\s+/).map(Number) : []
}

const noSecondUser = skip ?? secondUserSkipReason()

describe.skipIf(noSecondUser)('another local user', () => {
  let user: SecondUser
  beforeAll(() => {
    user = createSecondUser()
  })
  afterAll(() => user?.remove())

  test('cannot connect to the forward: not through the unix socket, not on 127.0.0.1', async () => {
    const vm = startStandIn()
    try {
      const mine = await askWhenUp(new UnixTransport(vm.socket, 1024))
      expect(mine.netns).toBe(readlinkSync(`/proc/${vm.pid}/ns/net`))
      const attack = user.node(ATTACK_SCRIPT, [JSON.stringify([vm.socket, INNER_PORT])])
      expect(attack.stderr).toBe('')
      expect(JSON.parse(attack.stdout)).toEqual({ [vm.socket]: 'denied', [String(INNER_PORT)]: 'refused' })
    } finally {
      vm.kill()
      await vm.exited
      rmSync(vm.dir, { recursive: true, force: true })
    }
  })

  test('can give its own QEMU a private namespace too (unprivileged user namespace)', async () => {
    const probe = user.node(`
      import { execFileSync } from 'node:child_process'
      execFileSync('unshare', ['--user', '--map-root-user', '--net', '--', 'sh', '-c', 'ip link set lo up'])
      process.stdout.write('ok')
    `)
    expect(probe).toMatchObject({ status: 0, stdout: 'ok' })
  })
})

test('the relay script exists where netnsCommand looks for it', () => {
  const { args } = netnsCommand({ binary: '/bin/true', argv: [], forwards: [] })
  expect(existsSync(args[args.indexOf('/bin/true') - 3]!)).toBe(true)
})

test('a relay whose QEMU died before its parent-death signal was armed exits at once, listening on nothing', async () => {
  const { args } = netnsCommand({ binary: '/bin/true', argv: [], forwards: [] })
  const dir = realpathSync(mkdtempSync(join(tmpdir(), 'relay-orphan-')))
  try {
    const socket = join(dir, 'control.sock')
    // The wrapper passes its own PID ($$); here that PID is not the relay's parent (we are).
    const notOurParent = process.ppid
    const relay = await execa(
      process.execPath,
      [args[args.indexOf('/bin/true') - 3]!, JSON.stringify([{ path: socket, port: INNER_PORT }]), String(notOurParent)],
      {
        reject: false,
        timeout: 10_000,
      },
    )
    expect(relay.exitCode).toBe(0)
    expect(existsSync(socket)).toBe(false)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

/** Connects where each request line ({ host, port }) says and answers what the far end said or the error. */
const DIALER = `
const { createServer, connect } = require('node:net')
createServer((s) => {
  s.once('data', (line) => {
    const { host, port } = JSON.parse(String(line))
    const out = connect({ host, port })
    const done = (what) => { out.destroy(); s.end(what + '\\n') }
    out.setTimeout(3000, () => done('timeout'))
    out.on('data', (d) => done('said ' + String(d).trim()))
    out.on('error', (err) => done(err.code))
  })
}).listen(${INNER_PORT}, '127.0.0.1')
`

describe.skipIf(skip ?? (egressAvailable() ? undefined : 'slirp4netns is not installed'))('outbound network through slirp4netns', () => {
  test("the guest side reaches the host by its network address, not the host's 127.0.0.1", async () => {
    const address = Object.values(networkInterfaces())
      .flat()
      .find((i) => i && i.family === 'IPv4' && !i.internal)?.address
    if (!address) throw new Error('this host has no non-loopback IPv4 address to dial')
    const hello = createServer((s) => s.end('hello\n'))
    await new Promise<void>((resolve) => hello.listen(0, '0.0.0.0', resolve))
    const port = (hello.address() as AddressInfo).port
    const dir = realpathSync(mkdtempSync(join(tmpdir(), 'netns-')))
    const socket = join(dir, 'dial.sock')
    const { file, args } = netnsCommand({ binary: process.execPath, argv: ['-e', DIALER], forwards: [{ path: socket, port: INNER_PORT }] })
    const child = execa(file, args, { reject: false, stdio: 'inherit' })
    const egress = startEgress(child.pid!, defaultUserns(), () => undefined)
    const dial = async (host: string) => {
      const s = await new UnixTransport(socket, 0).connect(2_000)
      s.write(JSON.stringify({ host, port }))
      let text = ''
      for await (const chunk of s) text += String(chunk)
      return text.trim()
    }
    try {
      await egress.ready
      // Until the dialer listens, the relay (or the missing socket) ends each attempt without an answer.
      let first = ''
      for (let i = 0; i < 400 && !first; i++) {
        first = await dial(address).catch(() => '')
        if (!first) await sleep(25)
      }
      expect(first).toBe('said hello')
      // 10.0.2.2 would be the host's loopback; --disable-host-loopback refuses it.
      expect(await dial('10.0.2.2')).not.toBe('said hello')
    } finally {
      egress.stop()
      child.kill('SIGKILL')
      await child
      hello.close()
      rmSync(dir, { recursive: true, force: true })
    }
  })
})

describe.skipIf(skip ?? (egressAvailable() ? undefined : 'slirp4netns is not installed'))('egress of a detached VM (#20)', () => {
  test('after unref() slirp4netns and its pipes hold this process open no more; it runs on until stopped', async () => {
    const vm = startStandIn()
    const before = heldHandles()
    const egress = startEgress(vm.pid, defaultUserns(), () => undefined)
    try {
      await egress.ready
      const slirp = findSlirp(vm.pid)
      expect(slirp).toBeDefined()
      // slirp4netns (setpriv exec'd it: the same PID) with its stdout and stderr pipes.
      const egressHandles = heldHandles().filter((h) => !before.includes(h))
      expect(egressHandles.filter((h) => h instanceof ChildProcess).map((h) => (h as ChildProcess).pid)).toEqual([slirp])
      expect(egressHandles).toHaveLength(3)
      egress.unref()
      expect(heldHandles().filter((h) => egressHandles.includes(h))).toEqual([])
      expect(isAlive(slirp as number)).toBe(true)
    } finally {
      egress.stop()
      vm.kill()
      await vm.exited
      rmSync(vm.dir, { recursive: true, force: true })
    }
  })
})

/** The slirp4netns that serves the namespace of `pid` (its argv names /proc/<pid>/ns/net). */
function findSlirp(pid: number): number | undefined {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0')
      if (argv[0]?.endsWith('slirp4netns') && argv.includes(`/proc/${pid}/ns/net`)) return Number(entry)
    } catch {
      // gone meanwhile
    }
  }
  return undefined
}

describe.skipIf(skip)('the relay moves bytes faithfully', () => {
  test('4 MiB sent just before the far end closes all arrive; a half-close reaches the far end', async () => {
    // Answers the bytes it got, then 4 MiB, then closes at once; counts what it received until the client's end.
    const bulk = `
      const { createServer } = require('node:net')
      createServer({ allowHalfOpen: true }, (s) => {
        let got = 0
        s.on('data', (d) => (got += d.length))
        s.on('end', () => { s.write('got ' + got + '\\n'); s.end(Buffer.alloc(4 * 1024 * 1024, 120)) })
      }).listen(${INNER_PORT}, '127.0.0.1')
    `
    const dir = realpathSync(mkdtempSync(join(tmpdir(), 'netns-')))
    const socket = join(dir, 'bulk.sock')
    const { file, args } = netnsCommand({ binary: process.execPath, argv: ['-e', bulk], forwards: [{ path: socket, port: INNER_PORT }] })
    const child = execa(file, args, { reject: false, stdio: 'inherit' })
    try {
      let answer: Buffer = Buffer.alloc(0)
      for (let i = 0; i < 400 && answer.length === 0; i++) {
        answer = await new Promise<Buffer>((resolve) => {
          const s = connect({ path: socket, allowHalfOpen: true })
          const chunks: Buffer[] = []
          s.on('connect', () => s.end(Buffer.alloc(100_000, 1)))
          s.on('data', (d: Buffer) => chunks.push(d))
          s.on('close', () => resolve(Buffer.concat(chunks)))
          s.on('error', () => undefined)
        })
        if (answer.length === 0) await sleep(25)
      }
      const text = answer.toString('latin1')
      expect(text.slice(0, text.indexOf('\n'))).toBe('got 100000')
      expect(answer.length - text.indexOf('\n') - 1).toBe(4 * 1024 * 1024)
    } finally {
      child.kill('SIGKILL')
      await child
      rmSync(dir, { recursive: true, force: true })
    }
  })
})

describe.skipIf(skip)('a vhost-vsock reservation through the namespace wrapper', () => {
  test.each([false, true])('spawnQemu (userns %s) hands fd 3 to QEMU through unshare, sh and setpriv; the relay does not hold it', async (userns) => {
    const dir = realpathSync(mkdtempSync(join(tmpdir(), 'netns-fd-')))
    const target = join(dir, 'stand-in-for-vhost-vsock')
    writeFileSync(target, '')
    const script = join(dir, 'fake-qemu')
    writeFileSync(script, '#!/bin/sh\nexec sleep 30\n', { mode: 0o755 })
    const fd = openSync(target, 'r')
    try {
      const qemu = spawnQemu({
        binary: script,
        argv: [],
        qemuLog: join(dir, 'qemu.log'),
        fds: [fd],
        netns: { userns, relay: [{ path: join(dir, 'x.sock'), port: INNER_PORT }] },
      })
      try {
        // Once the relay runs, the exec chain has reached QEMU (sh starts the relay just before exec).
        let relay: number[] = []
        for (let i = 0; i < 400 && relay.length === 0; i++) {
          relay = childPids(qemu.pid)
          if (relay.length === 0) await sleep(25)
        }
        for (let i = 0; i < 400 && !readFileSync(`/proc/${qemu.pid}/cmdline`, 'utf8').startsWith('sleep'); i++) await sleep(25)
        expect(readlinkSync(`/proc/${qemu.pid}/fd/${VHOST_FD_IN_CHILD}`)).toBe(target)
        expect(readlinkSync(`/proc/${qemu.pid}/ns/net`)).not.toBe(readlinkSync('/proc/self/ns/net'))
        expect(existsSync(`/proc/${relay[0]}/fd/${VHOST_FD_IN_CHILD}`) && readlinkSync(`/proc/${relay[0]}/fd/${VHOST_FD_IN_CHILD}`) === target).toBe(false)
      } finally {
        qemu.kill('SIGKILL')
        await qemu.exited
      }
    } finally {
      closeSync(fd)
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
