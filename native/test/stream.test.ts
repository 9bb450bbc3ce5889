import { createHash, randomBytes } from 'node:crypto'
import { constants, openSync } from 'node:fs'
import { execFileSync } from 'node:child_process'
import { join } from 'node:path'
import { afterEach, describe, expect, test, vi } from 'vitest'
import { E, type ErrnoError } from '../src/errors.js'
import { loadBinding } from '../src/load.js'
import { connect, VsockSocket } from '../src/socket.js'
import { closed, collect, once, sleep, socketPair, tempDir } from './support.js'

// The Duplex logic is family-agnostic (read/write/shutdown/poll on an fd), so it runs here over
// an AF_UNIX socketpair; the AF_VSOCK runs are test/guest/vsock-loopback.mjs.

/** Writes `total` bytes of pseudo-random data in `chunk`-sized writes, honouring backpressure. */
async function pump(s: VsockSocket, total: number, chunk = 256 * 1024): Promise<string> {
  const hash = createHash('sha256')
  const block = randomBytes(chunk)
  let sent = 0
  while (sent < total) {
    const n = Math.min(chunk, total - sent)
    const b = Buffer.from(block.subarray(0, n))
    b.writeUInt32LE(sent >>> 0, 0)
    hash.update(b)
    sent += n
    if (!s.write(b)) await once(s, 'drain')
  }
  s.end()
  return hash.digest('hex')
}

async function sha256Of(s: VsockSocket): Promise<{ hex: string; bytes: number }> {
  const hash = createHash('sha256')
  let bytes = 0
  for await (const d of s) {
    hash.update(d as Buffer)
    bytes += (d as Buffer).length
  }
  return { hex: hash.digest('hex'), bytes }
}

afterEach(() => {
  vi.restoreAllMocks()
})

describe('VsockSocket stream (over a socketpair)', () => {
  test('echo round trip, addresses unknown for a non-vsock fd', async () => {
    const [a, b] = socketPair()
    b.on('data', (d: Buffer) => b.write(d))
    a.write('ping')
    const d = await once<Buffer>(a, 'data')
    expect(d.toString()).toBe('ping')
    expect(a.remoteCid).toBe(-1)
    a.destroy()
    b.destroy()
  })

  test('64 MiB each way at once, sha256 intact', async () => {
    const [a, b] = socketPair({ allowHalfOpen: true }, { allowHalfOpen: true })
    const size = 64 * 1024 * 1024
    const [sentA, sentB, gotB, gotA] = await Promise.all([pump(a, size), pump(b, size, 100_003), sha256Of(b), sha256Of(a)])
    expect(gotB).toEqual({ hex: sentA, bytes: size })
    expect(gotA).toEqual({ hex: sentB, bytes: size })
    expect(a.bytesWritten).toBe(size)
    expect(a.bytesRead).toBe(size)
    await Promise.all([closed(a), closed(b)])
  })

  test('backpressure: a paused reader stalls the writer; nothing piles up in memory', async () => {
    const [w, r] = socketPair()
    r.pause()
    const chunk = Buffer.alloc(64 * 1024, 1)
    let accepted = 0
    let stalled = false
    const before = process.memoryUsage().arrayBuffers
    for (let i = 0; i < 1024 && !stalled; i++) {
      accepted += chunk.length
      if (!w.write(chunk)) {
        // The writer honours backpressure; give the poll a while to push what the kernel takes.
        const drained = await Promise.race([once(w, 'drain').then(() => true), sleep(300).then(() => false)])
        stalled = !drained
      }
    }
    expect(stalled).toBe(true)
    // Stalled after: kernel buffers (both sockets) + the reader's highWaterMark + the writer's.
    expect(accepted).toBeLessThan(8 * 1024 * 1024)
    expect(r.readableLength).toBeLessThanOrEqual(r.readableHighWaterMark + 64 * 1024)
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(16 * 1024 * 1024)
    // Resume: everything arrives.
    const total = collect(r)
    r.resume()
    w.end()
    expect((await total).length).toBe(accepted)
  })

  test('half-close: end() is shutdown(SHUT_WR); the peer sees EOF and can still answer', async () => {
    const [a, b] = socketPair({ allowHalfOpen: true }, { allowHalfOpen: true })
    const got: Buffer[] = []
    b.on('data', (d: Buffer) => got.push(d))
    b.on('end', () => {
      b.end(`you said ${Buffer.concat(got).toString()}`)
    })
    a.end('hello')
    const reply = await collect(a)
    expect(reply.toString()).toBe('you said hello')
    await Promise.all([closed(a), closed(b)])
  })

  test('without allowHalfOpen the peer ends its side after EOF (as net)', async () => {
    const [a, b] = socketPair({ allowHalfOpen: true })
    b.resume()
    a.end('bye')
    await collect(a)
    await closed(b)
    expect(b.destroyed).toBe(true)
  })

  test('destroy(): the fd and poll are released; the peer sees EOF; writing to it fails with EPIPE', async () => {
    const [a, b] = socketPair()
    const fd = a.fileDescriptor
    a.destroy()
    await closed(a)
    expect(a.fileDescriptor).toBe(-1)
    expect(loadBinding().close(fd)).toBe(-E.EBADF)
    b.resume()
    await once(b, 'end')
    const c = socketPair()
    c[1].destroy()
    await closed(c[1])
    const err = new Promise<ErrnoError>((resolve) => c[0].on('error', resolve))
    c[0].write('x')
    const e = await err
    expect(['EPIPE', 'ECONNRESET']).toContain(e.code)
    expect(e.syscall).toBe('write')
    expect(e.errno).toBe(-(E as Record<string, number>)[e.code]!)
    b.destroy()
  })

  test('a socket with nothing to do does not keep the loop busy (no busy polling)', async () => {
    const [a, b] = socketPair()
    const t0 = process.cpuUsage()
    await sleep(300)
    const used = process.cpuUsage(t0)
    expect((used.user + used.system) / 1000).toBeLessThan(100)
    a.destroy()
    b.destroy()
  })

  test('writev: corked writes go out in one call', async () => {
    const [a, b] = socketPair()
    const spy = vi.spyOn(loadBinding(), 'writev')
    a.cork()
    for (let i = 0; i < 100; i++) a.write(`${i},`)
    a.uncork()
    a.end()
    const got = await collect(b)
    expect(got.toString()).toBe(Array.from({ length: 100 }, (_, i) => `${i},`).join(''))
    expect(spy).toHaveBeenCalled()
    b.destroy()
  })
})

describe('connect() error paths (binding calls stubbed: no vsock peer on this host)', () => {
  test('times out with ETIMEDOUT when the connect never completes', async () => {
    const b = loadBinding()
    // A FIFO read end never becomes writable: a connect that never completes.
    const dir = tempDir('vsock-conn-')
    execFileSync('mkfifo', [join(dir, 'f')])
    const fifo = openSync(join(dir, 'f'), constants.O_RDONLY | constants.O_NONBLOCK)
    vi.spyOn(b, 'socket').mockReturnValue(fifo)
    vi.spyOn(b, 'setConnectTimeout').mockReturnValue(0)
    const connectSpy = vi.spyOn(b, 'connect').mockReturnValue(-E.EINPROGRESS)
    const closeSpy = vi.spyOn(b, 'close')
    const t0 = Date.now()
    const err = (await connect(7, 1234, { timeoutMs: 200 }).catch((e: unknown) => e)) as ErrnoError
    expect(Date.now() - t0).toBeGreaterThanOrEqual(190)
    expect(err.code).toBe('ETIMEDOUT')
    expect(err.syscall).toBe('connect')
    expect(err.message).toBe('connect ETIMEDOUT vsock 7:1234 (connection timed out)')
    expect(err.cid).toBe(7)
    expect(connectSpy).toHaveBeenCalledWith(fifo, 7, 1234)
    expect(closeSpy).toHaveBeenCalledWith(fifo)
  })

  test('a reset answer to the connect request is reported as ECONNREFUSED', async () => {
    const b = loadBinding()
    const pair = new Int32Array(2)
    b.socketpair(pair)
    vi.spyOn(b, 'socket').mockReturnValue(pair[0]!)
    vi.spyOn(b, 'setConnectTimeout').mockReturnValue(0)
    vi.spyOn(b, 'connect').mockReturnValue(-E.EINPROGRESS)
    vi.spyOn(b, 'soError').mockReturnValue(E.ECONNRESET)
    const err = (await connect(3, 9, { timeoutMs: 5000 }).catch((e: unknown) => e)) as ErrnoError
    expect(err.code).toBe('ECONNREFUSED')
    expect(err.errno).toBe(-E.ECONNREFUSED)
    b.close(pair[1]!)
  })

  test('an immediate failure keeps its own code (ENODEV: no transport reaches the CID)', async () => {
    const b = loadBinding()
    const pair = new Int32Array(2)
    b.socketpair(pair)
    vi.spyOn(b, 'socket').mockReturnValue(pair[0]!)
    vi.spyOn(b, 'setConnectTimeout').mockReturnValue(0)
    vi.spyOn(b, 'connect').mockReturnValue(-E.ENODEV)
    await expect(connect(99, 1)).rejects.toMatchObject({ code: 'ENODEV', syscall: 'connect', cid: 99, port: 1 })
    b.close(pair[1]!)
  })

  test('arguments are checked', async () => {
    await expect(connect(-1, 1)).rejects.toThrow(RangeError)
    await expect(connect(3, 2 ** 32)).rejects.toThrow(RangeError)
    await expect(connect(3, 1, { timeoutMs: 0 })).rejects.toThrow(RangeError)
  })
})
