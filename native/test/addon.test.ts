import { spawnSync } from 'node:child_process'
import { join } from 'node:path'
import { describe, expect, test } from 'vitest'
import { addonCandidates, loadBinding, missingAddonMessage, packageRoot, platformTag } from '../src/load.js'
import { assertDistFresh, distDir, tempDir } from './support.js'

describe('the addon', () => {
  test('loads for this platform, built for N-API 8', () => {
    const b = loadBinding()
    expect(b.constants.NAPI_VERSION).toBe(8)
    expect(b.constants.AF_VSOCK).toBe(40)
    expect(b.constants.VMADDR_CID_LOCAL).toBe(1)
    expect(typeof b.Poll).toBe('function')
    expect(addonCandidates(packageRoot, {})[0]).toBe(join(packageRoot, 'prebuilds', platformTag(), 'vsock.node'))
  })

  test('the same binary loads on the machine Node (N-API is ABI-stable across Node releases)', () => {
    // The repo's Node 24 runs this test; /usr/bin/node (20 here) loads the same file.
    assertDistFresh()
    const others = ['/usr/bin/node', '/usr/local/bin/node'].filter((n) => n !== process.execPath)
    const probe = `import(${JSON.stringify(join(distDir, 'index.js'))}).then((m) => console.log(process.version, m.loadBinding().constants.NAPI_VERSION))`
    let ran = 0
    for (const node of others) {
      const r = spawnSync(node, ['-e', probe], { encoding: 'utf8' })
      if (r.error) continue
      ran++
      expect(r.stderr).toBe('')
      expect(r.stdout).toMatch(/^v\d+\.\d+\.\d+ 8\n$/)
    }
    if (ran === 0) console.warn('no second Node binary on this machine; cross-version load not checked')
  })

  test('bad arguments are TypeErrors, not crashes', () => {
    const b = loadBinding()
    expect(() => b.read(-1, Buffer.alloc(1), 0, 1)).toThrow(TypeError)
    expect(() => b.read(0, Buffer.alloc(1), 0, 2)).toThrow(/outside the buffer/)
    expect(() => b.read(0, new Uint16Array(2) as unknown as Uint8Array, 0, 1)).toThrow(TypeError)
    expect(() => b.bind(0, -1, 0)).toThrow(TypeError)
    expect(() => new b.Poll(0, 'nope' as unknown as () => void)).toThrow(TypeError)
  })

  test('system call failures come back as -errno', () => {
    const b = loadBinding()
    expect(b.close(987_654)).toBe(-9) // EBADF
    expect(b.read(987_654, Buffer.alloc(4), 0, 4)).toBe(-9)
  })

  test('a missing platform is named with the way to build it', () => {
    const msg = missingAddonMessage(['/x/prebuilds/linux-riscv64/vsock.node'], 'linux', 'riscv64')
    expect(msg).toContain('no native addon for linux-riscv64')
    expect(msg).toContain('/x/prebuilds/linux-riscv64/vsock.node')
    expect(msg).toContain('npm run build -w native')
    expect(missingAddonMessage([], 'darwin', 'arm64')).toMatch(/Linux-only/)
  })

  test('the loader says which file it looked for when the prebuild is missing', () => {
    assertDistFresh()
    // A copy of dist/ without prebuilds next to it.
    const root = tempDir('vsock-noaddon-')
    const r = spawnSync('sh', [
      '-c',
      `cp -r ${JSON.stringify(distDir)} ${JSON.stringify(root)}/dist && echo '{"type":"module"}' > ${JSON.stringify(root)}/package.json`,
    ])
    expect(r.status).toBe(0)
    const run = spawnSync(
      process.execPath,
      [
        '-e',
        `import(${JSON.stringify(join(root, 'dist', 'index.js'))}).then((m) => m.loadBinding()).catch((e) => { console.log(e.message); process.exit(3) })`,
      ],
      { encoding: 'utf8', env: { ...process.env, STEREOS_VSOCK_ADDON: '' } },
    )
    expect(run.status).toBe(3)
    expect(run.stdout).toContain(`no native addon for ${platformTag()}`)
    expect(run.stdout).toContain(join(root, 'prebuilds', platformTag(), 'vsock.node'))
  })

  test('20,000 sockets (10,000 pairs) opened and destroyed: no fd and no heap growth', () => {
    assertDistFresh()
    const script = `
      const m = await import(${JSON.stringify(join(distDir, 'index.js'))})
      const { readdirSync } = await import('node:fs')
      const b = m.loadBinding()
      async function round(n) {
        for (let i = 0; i < n; i++) {
          const out = new Int32Array(2)
          b.socketpair(out)
          const a = new m.VsockSocket(out[0]), c = new m.VsockSocket(out[1])
          a.write('x')
          await new Promise((r) => c.once('data', r))
          a.destroy(); c.destroy()
          await new Promise((r) => c.once('close', r))
        }
      }
      const settle = async () => { gc(); await new Promise((r) => setTimeout(r, 20)); gc() }
      await round(1000); await settle()
      const h0 = process.memoryUsage().heapUsed, f0 = readdirSync('/proc/self/fd').length
      await round(10000); await settle()
      console.log(JSON.stringify({ heap: process.memoryUsage().heapUsed - h0, fds: readdirSync('/proc/self/fd').length - f0 }))
    `
    const r = spawnSync(process.execPath, ['--expose-gc', '--input-type=module', '-e', script], { encoding: 'utf8', timeout: 60_000 })
    expect(r.stderr).toBe('')
    const { heap, fds } = JSON.parse(r.stdout) as { heap: number; fds: number }
    expect(fds).toBe(0)
    expect(heap).toBeLessThan(1024 * 1024)
  })

  test('a worker thread can exit (or be terminated) with sockets still polling', () => {
    assertDistFresh()
    const script = `
      const { Worker } = require('node:worker_threads')
      const code = \`
        import(${JSON.stringify(join(distDir, 'index.js'))}).then((m) => {
          const b = m.loadBinding()
          const out = new Int32Array(2)
          b.socketpair(out)
          const a = new m.VsockSocket(out[0]), c = new m.VsockSocket(out[1])
          a.write(Buffer.alloc(1 << 20)) // c never reads: a waits for writable, c polls readable
          require('node:worker_threads').parentPort.postMessage('up')
          if (process.env.MODE === 'exit') setTimeout(() => process.exit(0), 20)
        })
      \`
      const w = new Worker(code, { eval: true, env: process.env })
      w.on('message', () => { if (process.env.MODE === 'terminate') setTimeout(() => w.terminate(), 20) })
      w.on('error', (e) => { console.error('worker error', e); process.exit(2) })
      w.on('exit', (code) => console.log('worker exit', code))
    `
    for (const mode of ['exit', 'terminate']) {
      const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', env: { ...process.env, MODE: mode }, timeout: 20_000 })
      expect(r.stderr).toBe('')
      expect(r.status).toBe(0)
      expect(r.stdout).toMatch(/worker exit [01]/)
    }
  })
})
