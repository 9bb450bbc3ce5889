#!/usr/bin/env node
// `npm run build -w native`: the addon for linux-x64 and linux-arm64 and the TypeScript.
//
//   prebuilds/linux-x64/vsock.node     g++ (or x86_64-linux-gnu-g++ on an arm64 machine)
//   prebuilds/linux-arm64/vsock.node   aarch64-linux-gnu-g++ (Debian's g++-aarch64-linux-gnu), or g++ on arm64
//   dist/                              tsc -p native
//
// One g++ invocation per arch, no node-gyp: nothing is downloaded. N-API is ABI-stable, so the
// Node headers only need to be new enough for NAPI_VERSION (any Node >= 12.22 has 8) and any
// libuv 1.x uv.h; they come from $NODE_HEADERS_DIR, the running Node's include/node, or
// /usr/include/node. libstdc++ is linked dynamically: Node itself needs libstdc++.so.6, and the
// static archive would pull in symbols of the build machine's glibc (arc4random, 2.36).
// Each arch is skipped when its stamp (a hash of the source, flags, headers and compiler)
// matches. The host's own arch is required; the other is built when its compiler is installed
// (a warning otherwise; STEREOS_VSOCK_REQUIRE_ALL=1 makes it an error).
//
// Options: --arch x64|arm64 (repeatable; default both), --force, --no-tsc.
import { spawn, spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = dirname(dirname(fileURLToPath(import.meta.url)))
const require = createRequire(join(root, 'package.json'))
const say = (line) => process.stdout.write(`native: ${line}\n`)

const NAPI_VERSION = 8
const SOURCES = ['src/vsock.cc']
const hostArch = process.arch

const args = process.argv.slice(2)
const force = args.includes('--force')
const noTsc = args.includes('--no-tsc')
const archArgs = args.flatMap((a, i) => (args[i - 1] === '--arch' ? [a] : []))
const arches = archArgs.length > 0 ? archArgs : ['x64', 'arm64']
const requireAll = process.env.STEREOS_VSOCK_REQUIRE_ALL === '1'

const TOOLCHAINS = {
  x64: hostArch === 'x64' ? ['g++', 'x86_64-linux-gnu-g++'] : ['x86_64-linux-gnu-g++'],
  arm64: hostArch === 'arm64' ? ['g++', 'aarch64-linux-gnu-g++'] : ['aarch64-linux-gnu-g++'],
}
const DEBIAN_PACKAGE = { x64: 'g++-x86-64-linux-gnu', arm64: 'g++-aarch64-linux-gnu' }

function which(bin) {
  const r = spawnSync('sh', ['-c', `command -v "${bin}"`], { encoding: 'utf8' })
  return r.status === 0 ? r.stdout.trim() : null
}

function nodeHeaders() {
  const candidates = [
    process.env.NODE_HEADERS_DIR,
    join(dirname(dirname(process.execPath)), 'include', 'node'),
    '/usr/local/include/node',
    '/usr/include/node',
  ].filter(Boolean)
  const dir = candidates.find((d) => existsSync(join(d, 'node_api.h')) && existsSync(join(d, 'uv.h')))
  if (!dir) {
    throw new Error(
      `Node's C headers (node_api.h, uv.h) not found in ${candidates.join(', ')}: ` +
        'install them (Debian: the nodejs or libnode-dev package; or unpack a Node release tarball) or set NODE_HEADERS_DIR',
    )
  }
  return dir
}

function compileArgs(headers, out) {
  return [
    '-std=c++17',
    '-O2',
    '-fPIC',
    '-shared',
    '-fvisibility=hidden',
    '-fno-exceptions',
    '-Wall',
    '-Wextra',
    '-Wno-unused-parameter',
    `-DNAPI_VERSION=${NAPI_VERSION}`,
    '-DNAPI_DISABLE_CPP_EXCEPTIONS',
    '-DNODE_ADDON_API_DISABLE_DEPRECATED',
    '-DNODE_GYP_MODULE_NAME=vsock',
    '-I',
    dirname(require.resolve('node-addon-api/package.json')),
    '-I',
    headers,
    ...SOURCES.map((s) => join(root, s)),
    '-o',
    out,
    '-Wl,--as-needed',
    '-Wl,-O1',
    '-s',
  ]
}

function stampFor(cxx, argv, headers) {
  const h = createHash('sha256')
  h.update(spawnSync(cxx, ['--version'], { encoding: 'utf8' }).stdout ?? '')
  h.update(JSON.stringify(argv.map((a) => a.replace(root, '<root>'))))
  for (const s of SOURCES) h.update(readFileSync(join(root, s)))
  for (const f of ['node_api.h', 'js_native_api.h', 'js_native_api_types.h', 'node_api_types.h', 'uv.h']) {
    if (existsSync(join(headers, f))) h.update(readFileSync(join(headers, f)))
  }
  h.update(readFileSync(require.resolve('node-addon-api/napi.h')))
  h.update(readFileSync(require.resolve('node-addon-api/napi-inl.h')))
  return h.digest('hex')
}

function run(cmd, argv) {
  return new Promise((resolve) => {
    const child = spawn(cmd, argv, { stdio: ['ignore', 'inherit', 'pipe'] })
    let stderr = ''
    child.stderr.on('data', (d) => (stderr += d))
    child.on('close', (code) => resolve({ code, stderr }))
    child.on('error', (err) => resolve({ code: -1, stderr: err.message }))
  })
}

async function buildArch(arch, headers) {
  const cxx = TOOLCHAINS[arch]?.map(which).find(Boolean)
  if (!cxx) {
    const msg = `no C++ compiler for linux-${arch} (looked for ${TOOLCHAINS[arch]?.join(', ') ?? 'nothing'}; Debian: apt-get install ${DEBIAN_PACKAGE[arch] ?? 'g++'})`
    if (arch === hostArch || requireAll) throw new Error(msg)
    say(`linux-${arch}: skipped, ${msg}`)
    return { arch, skipped: true }
  }
  const dir = join(root, 'prebuilds', `linux-${arch}`)
  const out = join(dir, 'vsock.node')
  const stampFile = join(dir, '.stamp')
  const tmp = join(dir, `.vsock.node.${process.pid}.tmp`)
  const argv = compileArgs(headers, tmp)
  const stamp = stampFor(cxx, compileArgs(headers, out), headers)
  if (!force && existsSync(out) && existsSync(stampFile) && readFileSync(stampFile, 'utf8') === stamp) {
    say(`linux-${arch}: up to date (${out.slice(root.length + 1)})`)
    return { arch, upToDate: true }
  }
  mkdirSync(dir, { recursive: true })
  const t0 = performance.now()
  const { code, stderr } = await run(cxx, argv)
  if (code !== 0) {
    rmSync(tmp, { force: true })
    throw new Error(`linux-${arch}: ${cxx} failed (exit ${code}):\n${stderr}`)
  }
  if (stderr.trim()) process.stderr.write(stderr)
  renameSync(tmp, out)
  writeFileSync(stampFile, stamp)
  say(`linux-${arch}: built ${out.slice(root.length + 1)} with ${cxx} in ${((performance.now() - t0) / 1000).toFixed(1)} s`)
  return { arch, built: true }
}

function tsc() {
  const t0 = performance.now()
  const bin = require.resolve('typescript/bin/tsc')
  const r = spawnSync(process.execPath, [bin, '-b', join(root, 'tsconfig.json')], { stdio: 'inherit' })
  if (r.status !== 0) throw new Error(`tsc -b native failed (exit ${r.status ?? r.signal})`)
  say(`TypeScript: dist/ up to date (${((performance.now() - t0) / 1000).toFixed(1)} s)`)
}

try {
  if (process.platform !== 'linux') {
    say(`skipping the addon: AF_VSOCK is Linux-only (this is ${process.platform})`)
  } else {
    const headers = nodeHeaders()
    const results = await Promise.all(arches.map((a) => buildArch(a, headers)))
    if (results.every((r) => r.skipped)) throw new Error('no addon was built')
  }
  if (!noTsc) tsc()
} catch (err) {
  process.stderr.write(`native: ${err.message}\n`)
  process.exit(1)
}
