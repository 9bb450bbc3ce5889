#!/usr/bin/env node
// Runs the in-guest suite (or the benchmark) in the fixture guest, with plain QEMU and the
// fixture's stereosd, no harness: stages this package (dist/, the guest arch's prebuild, the
// scripts) in a 9p share, boots the fixture from a qcow2 overlay, asks stereosd to mount the
// share and to start a `custom` agent that runs the script, waits for its exit code, prints its
// output, and kills the VM. The harness-driven run replaces this later; this is the manual path.
//
//   node native/test/guest/run-qemu.mjs [--arch x86_64|aarch64] [--bench] [--fixture <dir>]
//                                       [--timeout <s>] [-- <script args>]
//
// Needs `npm run build -w native` (the prebuild for the guest arch) and `npm run fixtures`.
import { spawn, spawnSync } from 'node:child_process'
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const nativeDir = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..')
const repo = dirname(nativeDir)
const argv = process.argv.slice(2)
const dd = argv.indexOf('--')
const scriptArgs = dd >= 0 ? argv.slice(dd + 1) : []
const opts = dd >= 0 ? argv.slice(0, dd) : argv
const opt = (name, dflt) => {
  const i = opts.indexOf(`--${name}`)
  return i >= 0 ? opts[i + 1] : dflt
}
const arch = opt('arch', 'x86_64')
const bench = opts.includes('--bench')
const fixture = resolve(opt('fixture', join(repo, 'fixtures', 'guest', 'out', arch)))
const timeoutS = Number(opt('timeout', bench ? 900 : 1200))
const say = (line) => process.stderr.write(`run-qemu: ${line}\n`)

const PROFILE = {
  x86_64: { qemu: 'qemu-system-x86_64', machine: ['-machine', 'q35', '-cpu', 'max'], node: 'x64' },
  aarch64: { qemu: 'qemu-system-aarch64', machine: ['-machine', 'virt,highmem=on', '-cpu', 'max,pauth=off'], node: 'arm64' },
}[arch]
if (!PROFILE) throw new Error(`--arch must be x86_64 or aarch64, got ${arch}`)
const kvm = arch === (process.arch === 'x64' ? 'x86_64' : 'aarch64') && existsSync('/dev/kvm') && process.env.STEREOS_VSOCK_KVM === '1'

for (const f of ['bzImage', 'initrd', 'cmdline', 'stereos.img']) {
  if (!existsSync(join(fixture, f))) throw new Error(`${join(fixture, f)} missing: build the fixture (npm run fixtures)`)
}
const prebuild = join(nativeDir, 'prebuilds', `linux-${PROFILE.node}`, 'vsock.node')
for (const f of [prebuild, join(nativeDir, 'dist', 'index.js')]) {
  if (!existsSync(f)) throw new Error(`${f} missing: run \`npm run build -w native\``)
}

// The share: this package's layout, world-writable so the guest's agent user can write results.
const work = mkdtempSync(join(tmpdir(), `vsock-guest-${arch}-`))
const share = join(work, 'share')
mkdirSync(share)
cpSync(join(nativeDir, 'package.json'), join(share, 'package.json'))
cpSync(join(nativeDir, 'dist'), join(share, 'dist'), { recursive: true })
cpSync(prebuild, join(share, 'prebuilds', `linux-${PROFILE.node}`, 'vsock.node'))
cpSync(join(nativeDir, 'test', 'guest', 'vsock-loopback.mjs'), join(share, 'test', 'guest', 'vsock-loopback.mjs'))
cpSync(join(nativeDir, 'bench', 'vsock.mjs'), join(share, 'bench', 'vsock.mjs'))
chmodSync(share, 0o777)
const overlay = join(work, 'overlay.qcow2')
const img = spawnSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', join(fixture, 'stereos.img'), '-F', 'raw', overlay], { encoding: 'utf8' })
if (img.status !== 0) throw new Error(`qemu-img: ${img.stderr}`)

async function freePort() {
  const s = net.createServer()
  await new Promise((r) => s.listen(0, '127.0.0.1', r))
  const { port } = s.address()
  await new Promise((r) => s.close(r))
  return port
}

const port = await freePort()
const serial = join(work, 'serial.log')
const qemuArgs = [
  ...PROFILE.machine,
  '-accel',
  kvm ? 'kvm' : 'tcg',
  '-m',
  '1G',
  '-kernel',
  join(fixture, 'bzImage'),
  '-initrd',
  join(fixture, 'initrd'),
  '-append',
  readFileSync(join(fixture, 'cmdline'), 'utf8').trim(),
  '-drive',
  `if=virtio,format=qcow2,file=${overlay}`,
  '-nographic',
  '-nodefaults',
  '-no-user-config',
  '-no-reboot',
  '-serial',
  `file:${serial}`,
  '-fsdev',
  `local,id=s0,path=${share},security_model=none`,
  '-device',
  'virtio-9p-pci,fsdev=s0,mount_tag=share0',
  '-netdev',
  `user,id=n0,hostfwd=tcp:127.0.0.1:${port}-:1024`,
  '-device',
  'virtio-net-pci,netdev=n0,romfile=',
  '-device',
  'virtio-rng-pci',
]
say(`booting ${arch} (${kvm ? 'KVM' : 'TCG'}) from ${fixture}; work dir ${work}`)
const t0 = performance.now()
const qemu = spawn(PROFILE.qemu, qemuArgs, { stdio: ['ignore', 'ignore', 'pipe'] })
let qemuErr = ''
qemu.stderr.on('data', (d) => (qemuErr += d))
let qemuExited = false
qemu.on('exit', (code, sig) => {
  qemuExited = true
  if (!finished) say(`QEMU exited early (${code ?? sig}): ${qemuErr.trim()}`)
})
let finished = false
const killVm = () => {
  if (!qemuExited && qemu.pid) {
    try {
      process.kill(qemu.pid, 'SIGKILL')
    } catch {}
  }
}
process.on('exit', killVm)
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(130))

/** One NDJSON connection to stereosd; request(obj) → the response line. */
async function stereosd(deadline) {
  for (;;) {
    if (qemuExited) throw new Error('QEMU is gone')
    if (Date.now() > deadline) throw new Error('stereosd did not answer in time')
    const sock = net.connect(port, '127.0.0.1')
    const lines = []
    let buf = ''
    let waiter = null
    sock.on('data', (d) => {
      buf += d
      let i
      while ((i = buf.indexOf('\n')) >= 0) {
        lines.push(buf.slice(0, i))
        buf = buf.slice(i + 1)
      }
      waiter?.()
    })
    const gone = new Promise((r) => {
      sock.on('close', r)
      sock.on('error', r)
    })
    const request = async (obj, ms = 30_000) => {
      sock.write(JSON.stringify(obj) + '\n')
      const until = Date.now() + ms
      while (lines.length === 0) {
        const got = await Promise.race([
          new Promise((r) => (waiter = r)),
          gone.then(() => 'gone'),
          new Promise((r) => setTimeout(r, Math.max(1, until - Date.now()))),
        ])
        if (got === 'gone' && lines.length === 0) throw new Error('connection closed')
        if (Date.now() >= until && lines.length === 0) throw new Error('no answer')
      }
      return lines.shift()
    }
    try {
      const pong = await request({ type: 'ping' }, 3000)
      if (pong.includes('pong')) return { request, close: () => sock.destroy() }
    } catch {}
    sock.destroy()
    await new Promise((r) => setTimeout(r, 1000))
  }
}

let exitCode = 1
try {
  const ctl = await stereosd(Date.now() + 600_000)
  say(`stereosd answered after ${((performance.now() - t0) / 1000).toFixed(1)} s`)
  const mount = await ctl.request({ type: 'mount', payload: { tag: 'share0', guest_path: '/mnt/s', fs_type: '9p' } })
  if (mount.includes('"ok":false')) throw new Error(`mount: ${mount}`)
  const script = bench ? '/mnt/s/bench/vsock.mjs' : '/mnt/s/test/guest/vsock-loopback.mjs'
  const cmd = `node --expose-gc ${script} ${scriptArgs.join(' ')} > /mnt/s/result.txt 2>&1; echo $? > /mnt/s/exit-code`
  const jcard = `[[agents]]\nname = "vsock"\nharness = "custom"\ntype = "native"\nprompt = ${JSON.stringify(cmd)}\n`
  const cfg = await ctl.request({ type: 'set_config', payload: { content: jcard } })
  if (cfg.includes('"ok":false')) throw new Error(`set_config: ${cfg}`)
  ctl.close()
  say(`running ${script} in the guest`)
  const deadline = Date.now() + timeoutS * 1000
  while (!existsSync(join(share, 'exit-code'))) {
    if (qemuExited) throw new Error('QEMU exited before the script finished')
    if (Date.now() > deadline) throw new Error(`no result after ${timeoutS} s`)
    await new Promise((r) => setTimeout(r, 1000))
  }
  await new Promise((r) => setTimeout(r, 300))
  exitCode = Number(readFileSync(join(share, 'exit-code'), 'utf8').trim())
  process.stdout.write(readFileSync(join(share, 'result.txt'), 'utf8'))
  say(`guest script exited ${exitCode}; total ${((performance.now() - t0) / 1000).toFixed(0)} s`)
} catch (err) {
  say(`failed: ${err.message}; serial log: ${serial}`)
  if (existsSync(join(share, 'result.txt'))) process.stdout.write(readFileSync(join(share, 'result.txt'), 'utf8'))
  exitCode = 1
} finally {
  finished = true
  killVm()
  if (exitCode === 0 && !process.env.STEREOS_VSOCK_KEEP) rmSync(work, { recursive: true, force: true })
  else say(`kept ${work}`)
}
process.exit(exitCode)
