#!/usr/bin/env node
// The addon's AF_VSOCK suite, run INSIDE a guest that has the vsock_loopback transport (the
// fixture guest loads it at boot). Plain JS, no dependencies: it needs only this package's
// dist/ and prebuilds/linux-<arch>/vsock.node, found relative to this file (native/ layout) or
// through $STEREOS_VSOCK_PKG (a directory with that layout).
//
//   node --expose-gc vsock-loopback.mjs [--only <substring>]   (--expose-gc: memory sampled after GC)
//
// Output: one TAP line per test ("ok 3 - name # 812 ms", "not ok", "# SKIP"), diagnostics as
// "# ..." lines, and a last line that is JSON: {"summary":{"passed":n,"failed":n,"skipped":n,...}}.
// Exit status 0 when nothing failed.
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { existsSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const pkg = resolve(process.env.STEREOS_VSOCK_PKG ?? join(here, '..', '..'))
const entry = join(pkg, 'dist', 'index.js')
if (!existsSync(entry)) {
  console.log(`Bail out! ${entry} not found: build with \`npm run build -w native\` and ship dist/ and prebuilds/ with this script`)
  process.exit(2)
}
const vsock = await import(pathToFileURL(entry).href)
const { connect, listen, localCid, VMADDR_CID_LOCAL } = vsock

const onlyIdx = process.argv.indexOf('--only')
const only = onlyIdx > 0 ? process.argv[onlyIdx + 1] : undefined
const MiB = 1024 * 1024
const CID = VMADDR_CID_LOCAL // 1: loopback
let nextPort = 20_000 + (process.pid % 10_000)
const port = () => nextPort++

const tests = []
const test = (name, fn, timeoutMs = 300_000) => tests.push({ name, fn, timeoutMs })
const note = (line) => console.log(`# ${line}`)
class Skip extends Error {}
const skip = (why) => {
  throw new Skip(why)
}

/** A listening server whose connections are handed to `onConnection`. */
function server(onConnection, options = {}) {
  const s = listen(port(), { cid: CID, backlog: 256, ...options })
  s.on('connection', onConnection)
  s.on('error', (e) => note(`server error: ${e.message}`))
  return s
}

/** Writes `total` bytes (a random block, stamped with its offset), honouring backpressure. */
async function pump(sock, total, chunk = 256 * 1024) {
  const hash = createHash('sha256')
  const block = randomBytes(chunk)
  for (let sent = 0; sent < total; ) {
    const n = Math.min(chunk, total - sent)
    const b = Buffer.from(block.subarray(0, n))
    b.writeUInt32LE(sent >>> 0, 0)
    hash.update(b)
    sent += n
    if (!sock.write(b)) await once(sock, 'drain')
  }
  sock.end()
  return hash.digest('hex')
}

async function digest(sock) {
  const hash = createHash('sha256')
  let bytes = 0
  for await (const d of sock) {
    hash.update(d)
    bytes += d.length
  }
  return { hex: hash.digest('hex'), bytes }
}

const closed = (s) => (s.closed ? Promise.resolve() : once(s, 'close'))
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
const codeOf = (p) =>
  p.then(
    (s) => {
      s.destroy()
      return 'connected'
    },
    (e) => e.code,
  )

// ---------------------------------------------------------------------------------------------

test('localCid() answers', () => {
  let cid
  try {
    cid = localCid()
  } catch (e) {
    // /dev/vsock is 0600 root without udev's rule (KERNEL=="vsock", MODE="0666").
    if (e.code === 'EACCES' && process.getuid() !== 0) skip(`/dev/vsock is not readable by uid ${process.getuid()}: ${e.message}`)
    throw e
  }
  note(`local CID ${cid} (${cid === 0xffffffff ? 'no guest->host transport device' : 'guest->host transport attached'})`)
  assert.equal(typeof cid, 'number')
})

test('listen / connect / accept over CID 1, addresses on both ends', async () => {
  const accepted = []
  const srv = server((s) => accepted.push(s))
  const addr = srv.address()
  assert.equal(addr.cid, CID)
  const c = await connect(CID, addr.port, { timeoutMs: 5000 })
  while (accepted.length === 0) await sleep(5)
  const s = accepted[0]
  assert.equal(c.remoteCid, CID)
  assert.equal(c.remotePort, addr.port)
  assert.equal(c.localCid, CID)
  assert.equal(s.localPort, addr.port)
  assert.equal(s.remoteCid, CID)
  assert.equal(s.remotePort, c.localPort)
  s.write('hello from the server')
  const [d] = await once(c, 'data')
  assert.equal(d.toString(), 'hello from the server')
  c.destroy()
  s.destroy()
  await Promise.all([closed(c), closed(s)])
  await new Promise((r) => srv.close(r))
  assert.equal(srv.listening, false)
})

test('listen(0) picks a free port; the same port twice is EADDRINUSE', () => {
  const a = listen(0, { cid: CID })
  const { port: p } = a.address()
  assert.ok(p > 1023 && p !== 0xffffffff, `port ${p}`)
  assert.throws(
    () => listen(p, { cid: CID }),
    (e) => e.code === 'EADDRINUSE' && e.syscall === 'bind' && e.errno < 0,
  )
  a.close()
})

test('a port below 1024 without CAP_NET_BIND_SERVICE is EACCES', () => {
  if (process.getuid() === 0) skip('running as root')
  assert.throws(
    () => listen(80, { cid: CID }),
    (e) => e.code === 'EACCES' && e.syscall === 'bind',
  )
})

test('64 MiB each way at once, sha256 intact', async () => {
  let serverSide
  const srv = server((s) => (serverSide = s), { allowHalfOpen: true })
  const c = await connect(CID, srv.address().port, { allowHalfOpen: true })
  while (!serverSide) await sleep(5)
  const t0 = performance.now()
  const [sentC, sentS, gotS, gotC] = await Promise.all([pump(c, 64 * MiB), pump(serverSide, 64 * MiB, 100_003), digest(serverSide), digest(c)])
  const s = (performance.now() - t0) / 1000
  assert.deepEqual(gotS, { hex: sentC, bytes: 64 * MiB })
  assert.deepEqual(gotC, { hex: sentS, bytes: 64 * MiB })
  note(`128 MiB moved in ${s.toFixed(1)} s (${(128 / s).toFixed(1)} MiB/s incl. sha256 on both ends)`)
  await Promise.all([closed(c), closed(serverSide)])
  srv.close()
})

test('bufferSize (SO_VM_SOCKETS_BUFFER_SIZE) 1 MiB on both ends: 8 MiB intact', async () => {
  let serverSide
  const srv = server((s) => (serverSide = s), { bufferSize: MiB })
  const c = await connect(CID, srv.address().port, { bufferSize: MiB })
  while (!serverSide) await sleep(5)
  const [sent, got] = await Promise.all([pump(c, 8 * MiB), digest(serverSide)])
  assert.deepEqual(got, { hex: sent, bytes: 8 * MiB })
  c.resume() // consume the server's EOF, or c never ends (as with net)
  await closed(c)
  srv.close()
})

test('backpressure: a slow reader keeps the writer bounded (memory sampled while pumping)', async () => {
  let reader
  const srv = server((s) => (reader = s))
  const w = await connect(CID, srv.address().port)
  while (!reader) await sleep(5)
  // Phase 1: the reader does not read at all. The writer must stall after kernel buffers + HWMs.
  reader.pause()
  const chunk = Buffer.alloc(64 * 1024, 7)
  let accepted = 0
  for (;;) {
    accepted += chunk.length
    if (!w.write(chunk)) {
      const drained = await Promise.race([once(w, 'drain').then(() => true), sleep(500).then(() => false)])
      if (!drained) break
    }
    if (accepted > 64 * MiB) break
  }
  note(`paused reader: the writer stalled after ${(accepted / 1024).toFixed(0)} KiB; reader buffered ${reader.readableLength} B, writer ${w.writableLength} B`)
  assert.ok(accepted < 8 * MiB, `writer got ${accepted} bytes past a paused reader`)
  assert.ok(reader.readableLength <= reader.readableHighWaterMark + 64 * 1024)

  // Phase 2: the reader takes 64 KiB every 10 ms (~6 MiB/s) while the writer pumps 16 MiB more
  // as fast as 'drain' lets it. Memory must not track the amount pumped.
  // arrayBuffers counts garbage too (each large read hands its 64 KiB buffer to the stream), so
  // it is sampled after a full GC when node runs with --expose-gc; rss and the two streams'
  // buffers are sampled either way.
  const gc = globalThis.gc
  gc?.()
  const base = process.memoryUsage()
  let peakRss = base.rss
  let peakAb = base.arrayBuffers
  let peakBuffered = 0
  const sampler = setInterval(
    () => {
      if (gc) gc()
      const m = process.memoryUsage()
      peakRss = Math.max(peakRss, m.rss)
      peakAb = Math.max(peakAb, m.arrayBuffers)
      peakBuffered = Math.max(peakBuffered, reader.readableLength + w.writableLength)
    },
    gc ? 500 : 20,
  )
  let got = 0
  const total = accepted + 16 * MiB
  const readerDone = new Promise((resolve, reject) => {
    reader.on('error', reject)
    const step = () => {
      let n = 0
      let d
      while (n < 64 * 1024 && (d = reader.read()) !== null) n += d.length
      got += n
      if (got >= total) return resolve()
      setTimeout(step, 10)
    }
    step()
  })
  const t0 = performance.now()
  for (let sent = accepted; sent < total; sent += chunk.length) {
    if (!w.write(chunk)) await once(w, 'drain')
  }
  await readerDone
  clearInterval(sampler)
  const s = (performance.now() - t0) / 1000
  note(
    `slow reader: ${((total - accepted) / MiB).toFixed(0)} MiB in ${s.toFixed(1)} s; ` +
      `peak growth rss ${((peakRss - base.rss) / MiB).toFixed(1)} MiB, arrayBuffers ${((peakAb - base.arrayBuffers) / MiB).toFixed(1)} MiB` +
      `${gc ? ' (after GC)' : ' (incl. garbage: run with --expose-gc)'}; stream buffers at most ${(peakBuffered / 1024).toFixed(0)} KiB`,
  )
  assert.equal(got, total)
  assert.ok(peakBuffered <= reader.readableHighWaterMark + w.writableHighWaterMark + 128 * 1024, `streams buffered ${peakBuffered}`)
  if (gc) assert.ok(peakAb - base.arrayBuffers < 4 * MiB, `arrayBuffers grew ${peakAb - base.arrayBuffers}`)
  assert.ok(peakRss - base.rss < 48 * MiB, `rss grew ${peakRss - base.rss}`)
  w.destroy()
  reader.destroy()
  srv.close()
})

test('half-close: end() sends EOF, the peer still answers on its open side', async () => {
  const srv = server(
    (s) => {
      const parts = []
      s.on('data', (d) => parts.push(d))
      s.on('end', () => s.end(`you said ${Buffer.concat(parts)}`))
    },
    { allowHalfOpen: true },
  )
  const c = await connect(CID, srv.address().port, { allowHalfOpen: true })
  c.end('hello')
  const reply = []
  for await (const d of c) reply.push(d)
  assert.equal(Buffer.concat(reply).toString(), 'you said hello')
  await closed(c)
  srv.close()
})

test('200 concurrent connections, each echoed', async () => {
  const srv = server((s) => s.pipe(s))
  const p = srv.address().port
  const t0 = performance.now()
  const socks = await Promise.all(Array.from({ length: 200 }, () => connect(CID, p, { timeoutMs: 30_000 })))
  note(`200 connects in ${(performance.now() - t0).toFixed(0)} ms; server has ${srv.connectionCount}`)
  const replies = await Promise.all(
    socks.map(async (c, i) => {
      c.end(`conn ${i}`)
      const parts = []
      for await (const d of c) parts.push(d)
      return Buffer.concat(parts).toString()
    }),
  )
  replies.forEach((r, i) => assert.equal(r, `conn ${i}`))
  await Promise.all(socks.map(closed))
  await new Promise((r) => srv.close(r))
  assert.equal(srv.connectionCount, 0)
})

test('destroy(): the peer sees EOF or ECONNRESET, never a hang', async () => {
  let s
  const srv = server((x) => (s = x))
  const c = await connect(CID, srv.address().port)
  while (!s) await sleep(5)
  const outcome = new Promise((resolve) => {
    s.on('error', (e) => resolve(e.code))
    s.on('end', () => resolve('end'))
    s.resume()
  })
  c.destroy()
  const r = await Promise.race([outcome, sleep(10_000).then(() => 'hang')])
  assert.ok(r === 'end' || r === 'ECONNRESET', r)
  s.destroy()
  srv.close()
})

test('connect to a port nobody listens on is ECONNREFUSED', async () => {
  const p = port()
  const err = await connect(CID, p, { timeoutMs: 5000 }).then(
    () => null,
    (e) => e,
  )
  assert.ok(err, 'connected?')
  note(err.message)
  assert.equal(err.code, 'ECONNREFUSED', err.message)
  assert.equal(err.syscall, 'connect')
  assert.equal(err.cid, CID)
  assert.equal(err.port, p)
})

test('connect that gets no answer is ETIMEDOUT', async () => {
  // Loopback answers every connect at once (accept or reset), so a timeout needs a CID that a
  // transport accepts but nobody answers: another guest's CID, which the guest->host transport
  // sends to the host, where vhost-vsock drops it. Without a vsock device in this VM that
  // transport refuses at once (ENODEV) and nothing here can time out: then this is a SKIP (the
  // host suite covers the timeout path with a stubbed connect).
  const t0 = performance.now()
  const code = await codeOf(connect(0x7ffffff0, 5000, { timeoutMs: 1500 }))
  const ms = performance.now() - t0
  if (code === 'ENODEV') skip('no guest->host vsock device in this VM (ENODEV at once): no transport can time out')
  assert.equal(code, 'ETIMEDOUT')
  assert.ok(ms >= 1400, `timed out after ${ms} ms`)
})

test('connect to a CID nothing routes to is ENODEV (no guest->host device) or ETIMEDOUT', async () => {
  const code = await codeOf(connect(0x7ffffff1, 5000, { timeoutMs: 1500 }))
  assert.ok(code === 'ENODEV' || code === 'ETIMEDOUT', code)
})

// ---------------------------------------------------------------------------------------------

const results = { passed: 0, failed: 0, skipped: 0 }
const t0 = performance.now()
const selected = tests.filter((t) => !only || t.name.includes(only))
console.log(`TAP version 13\n1..${selected.length}`)
note(`node ${process.version} ${process.arch}, uid ${process.getuid()}, addon ${pkg}`)
for (const [i, t] of selected.entries()) {
  const start = performance.now()
  let timer
  try {
    await Promise.race([
      Promise.resolve().then(t.fn),
      new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out after ${t.timeoutMs} ms`)), t.timeoutMs))),
    ])
    results.passed++
    console.log(`ok ${i + 1} - ${t.name} # ${(performance.now() - start).toFixed(0)} ms`)
  } catch (e) {
    if (e instanceof Skip) {
      results.skipped++
      console.log(`ok ${i + 1} - ${t.name} # SKIP ${e.message}`)
    } else {
      results.failed++
      console.log(`not ok ${i + 1} - ${t.name}`)
      for (const line of String(e?.stack ?? e).split('\n')) console.log(`#   ${line}`)
    }
  } finally {
    clearTimeout(timer)
  }
}
console.log(
  JSON.stringify({
    summary: { ...results, total: selected.length, seconds: +((performance.now() - t0) / 1000).toFixed(1), arch: process.arch, node: process.version },
  }),
)
process.exit(results.failed ? 1 : 0)
