#!/usr/bin/env node
// In-guest benchmark: the addon's AF_VSOCK Duplex over vsock_loopback (CID 1) against Node's
// net over TCP loopback (127.0.0.1), same guest, same run, same code path for both.
//
//   node vsock.mjs [--mib 64] [--rounds 1000] [--size 64] [--reps 3]
//
// Throughput: one connection, the client writes --mib MiB (64 KiB writes, honouring
// backpressure), the server counts; after an untimed 16 MiB warm-up per transport, the best of
// --reps runs, alternating vsock and TCP.
// Latency: --rounds request/response round trips of --size bytes on one connection, one at a
// time. The last line is the throughput ratio vsock/TCP (the issue's target: >= 0.8).
import { once } from 'node:events'
import { existsSync, rmSync } from 'node:fs'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const pkg = resolve(process.env.STEREOS_VSOCK_PKG ?? join(here, '..'))
const entry = join(pkg, 'dist', 'index.js')
if (!existsSync(entry)) {
  console.error(`${entry} not found: build with \`npm run build -w native\``)
  process.exit(2)
}
const vsock = await import(pathToFileURL(entry).href)

const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`)
  return i > 0 ? Number(process.argv[i + 1]) : dflt
}
const MIB = arg('mib', 64)
const ROUNDS = arg('rounds', 1000)
const SIZE = arg('size', 64)
const REPS = arg('reps', 3)

/** The two transports behind one interface: listen(onConnection) → { port, close }, connect(port). */
const transports = {
  vsock: {
    listen(onConnection) {
      const s = vsock.listen(0, { cid: vsock.VMADDR_CID_LOCAL })
      s.on('connection', onConnection)
      return { port: s.address().port, close: () => s.close() }
    },
    connect: (port) => vsock.connect(vsock.VMADDR_CID_LOCAL, port),
  },
  'vsock-1m': {
    listen(onConnection) {
      const s = vsock.listen(0, { cid: vsock.VMADDR_CID_LOCAL, bufferSize: 1 << 20 })
      s.on('connection', onConnection)
      return { port: s.address().port, close: () => s.close() }
    },
    connect: (port) => vsock.connect(vsock.VMADDR_CID_LOCAL, port, { bufferSize: 1 << 20 }),
  },
  // Two controls that separate the JS layer from the kernel transport: the addon's Duplex and
  // Node's net over AF_UNIX. Equal numbers there mean the Duplex costs what net's does.
  'unix-addon': {
    listen(onConnection) {
      let other
      return {
        port: 0,
        close() {},
        connect() {
          const fds = new Int32Array(2)
          if (vsock.loadBinding().socketpair(fds) < 0) throw new Error('socketpair failed')
          other = new vsock.VsockSocket(fds[1])
          onConnection(other)
          return new vsock.VsockSocket(fds[0])
        },
      }
    },
    connect: (port, srv) => srv.connect(),
  },
  'unix-net': {
    async listen(onConnection) {
      const path = join(tmpdir(), `vsock-bench-${process.pid}.sock`)
      rmSync(path, { force: true })
      const s = net.createServer(onConnection)
      s.listen(path)
      await once(s, 'listening')
      return { port: path, close: () => s.close() }
    },
    async connect(path) {
      const c = net.connect(path)
      await once(c, 'connect')
      return c
    },
  },
  tcp: {
    async listen(onConnection) {
      const s = net.createServer(onConnection)
      s.listen(0, '127.0.0.1')
      await once(s, 'listening')
      return { port: s.address().port, close: () => s.close() }
    },
    async connect(port) {
      const c = net.connect(port, '127.0.0.1')
      await once(c, 'connect')
      c.setNoDelay(true)
      return c
    },
  },
}

async function throughput(t, mib = MIB) {
  const bytes = mib * 1024 * 1024
  let done
  const finished = new Promise((r) => (done = r))
  const srv = await t.listen((s) => {
    let n = 0
    s.on('data', (d) => (n += d.length))
    s.on('end', () => {
      done(n)
      s.end()
    })
  })
  const c = await t.connect(srv.port, srv)
  const chunk = Buffer.alloc(64 * 1024, 0x5a)
  const t0 = performance.now()
  for (let sent = 0; sent < bytes; sent += chunk.length) {
    if (!c.write(chunk)) await once(c, 'drain')
  }
  c.end()
  const got = await finished
  const s = (performance.now() - t0) / 1000
  if (got !== bytes) throw new Error(`${got} of ${bytes} bytes arrived`)
  c.destroy()
  srv.close()
  return bytes / 1e6 / s
}

async function latency(t) {
  const srv = await t.listen((s) => {
    s.on('data', (d) => s.write(d)) // echo
    s.on('end', () => s.end())
  })
  const c = await t.connect(srv.port, srv)
  const msg = Buffer.alloc(SIZE, 0x61)
  const times = []
  let pending = 0
  let resolveRound
  c.on('data', (d) => {
    pending -= d.length
    if (pending <= 0) resolveRound()
  })
  for (let i = 0; i < ROUNDS + 50; i++) {
    const t0 = performance.now()
    pending = SIZE
    const round = new Promise((r) => (resolveRound = r))
    c.write(msg)
    await round
    if (i >= 50) times.push((performance.now() - t0) * 1000) // µs; the first 50 warm up
  }
  c.destroy()
  srv.close()
  times.sort((a, b) => a - b)
  const q = (p) => times[Math.min(times.length - 1, Math.floor(p * times.length))]
  return { mean: times.reduce((a, b) => a + b, 0) / times.length, p50: q(0.5), p99: q(0.99) }
}

console.log(`# node ${process.version} ${process.arch}; ${MIB} MiB x ${REPS} reps per transport; ${ROUNDS} round trips of ${SIZE} B`)
const NAMES = ['vsock', 'vsock-1m', 'tcp', 'unix-addon', 'unix-net']
// Warm-up (JIT, page cache, socket buffers), not counted.
for (const name of NAMES) await throughput(transports[name], Math.min(16, MIB))
const best = Object.fromEntries(NAMES.map((n) => [n, 0]))
for (let rep = 0; rep < REPS; rep++) {
  for (const name of NAMES) {
    const mbs = await throughput(transports[name])
    best[name] = Math.max(best[name], mbs)
    console.log(`throughput ${name.padEnd(10)} rep ${rep + 1}: ${mbs.toFixed(1)} MB/s`)
  }
}
const lat = {}
for (const name of NAMES) {
  lat[name] = await latency(transports[name])
  const l = lat[name]
  console.log(`latency    ${name.padEnd(10)}: mean ${l.mean.toFixed(0)} µs, p50 ${l.p50.toFixed(0)} µs, p99 ${l.p99.toFixed(0)} µs (${ROUNDS} round trips)`)
}
console.log(`throughput best: ${NAMES.map((n) => `${n} ${best[n].toFixed(1)} MB/s`).join(', ')}`)
console.log(
  `control (same kernel transport, AF_UNIX): addon Duplex / net throughput ${(best['unix-addon'] / best['unix-net']).toFixed(2)}, latency mean net/addon ${(lat['unix-net'].mean / lat['unix-addon'].mean).toFixed(2)}`,
)
console.log(`latency mean ratio tcp/vsock: ${(lat.tcp.mean / lat.vsock.mean).toFixed(2)} (above 1: vsock is faster)`)
console.log(`throughput ratio vsock-1m/tcp (1 MiB vsock buffers): ${(best['vsock-1m'] / best.tcp).toFixed(2)}`)
console.log(`throughput ratio vsock/tcp: ${(best.vsock / best.tcp).toFixed(2)}`)
