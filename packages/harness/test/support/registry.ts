import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { zstdCompressSync } from 'node:zlib'
import { afterAll, beforeAll } from 'vitest'

/**
 * Test support for pulls against a real OCI distribution server: Debian's docker-registry (2.8)
 * on 127.0.0.1 with its own config (filesystem storage in a temp dir, no auth), a push helper
 * (POST, then PUT ?digest=), synthetic mixtapes published as a multi-arch index with the media
 * types and titles of STEREOS-FACTS §4.2, and a counting, fault-injecting, optionally
 * token-authenticating HTTP proxy in front of it.
 */

export const OCI_INDEX = 'application/vnd.oci.image.index.v1+json'
export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json'
export const OCI_EMPTY = 'application/vnd.oci.empty.v1+json'
const STEREOS = 'application/vnd.papercompute.stereos'
export const MT = {
  rawZstd: `${STEREOS}.disk.v1+raw+zstd`,
  qcow2Zstd: `${STEREOS}.disk.v1+qcow2+zstd`,
  raw: `${STEREOS}.disk.v1+raw`,
  kernel: `${STEREOS}.kernel.v1`,
  initrd: `${STEREOS}.initrd.v1`,
  cmdline: `${STEREOS}.cmdline.v1`,
  init: `${STEREOS}.init.v1`,
  toml: `${STEREOS}.mixtape-manifest.v1+toml`,
} as const

const temps: string[] = []

/** A temp dir that removeTempDirs() (in afterAll) takes away again. */
export function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  temps.push(dir)
  return dir
}

export function removeTempDirs(): void {
  for (const dir of temps.splice(0)) rmSync(dir, { recursive: true, force: true })
}

export const sha256 = (data: Buffer | string) => `sha256:${createHash('sha256').update(data).digest('hex')}`

export async function freePort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  await new Promise((resolve) => server.close(resolve))
  return port
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise((resolve) => child.once('exit', resolve))
  child.kill('SIGTERM')
  const timer = setTimeout(() => child.kill('SIGKILL'), 3_000)
  await exited
  clearTimeout(timer)
}

export interface Registry {
  /** host:port */
  host: string
  url: string
  stop(): Promise<void>
}

/** docker-registry serve on 127.0.0.1:<free port>, storage in a temp dir; resolves once /v2/ answers. */
export async function startRegistry(): Promise<Registry> {
  const dir = mkdtempSync(join(tmpdir(), 'sh-registry-'))
  for (let attempt = 1; ; attempt++) {
    const port = await freePort()
    const config = join(dir, 'config.yml')
    writeFileSync(
      config,
      [
        'version: 0.1',
        'log:',
        '  level: error',
        '  accesslog:',
        '    disabled: true',
        'storage:',
        '  filesystem:',
        `    rootdirectory: ${join(dir, 'data')}`,
        '  delete:',
        '    enabled: true',
        'http:',
        `  addr: 127.0.0.1:${port}`,
        '',
      ].join('\n'),
    )
    const child = spawn('docker-registry', ['serve', config], { stdio: ['ignore', 'ignore', 'pipe'] })
    let stderr = ''
    child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()))
    const url = `http://127.0.0.1:${port}`
    for (let i = 0; i < 100 && child.exitCode === null; i++) {
      const ok = await fetch(`${url}/v2/`).then(
        (r) => r.status === 200,
        () => false,
      )
      if (ok) {
        return {
          host: `127.0.0.1:${port}`,
          url,
          stop: async () => {
            await stopChild(child)
            rmSync(dir, { recursive: true, force: true })
          },
        }
      }
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
    await stopChild(child)
    if (attempt === 3) throw new Error(`docker-registry did not start (is the docker-registry package installed?): ${stderr.slice(-500)}`)
  }
}

/** Monolithic upload the way registry 2.8 keeps the data: POST for a session, then PUT ?digest= with the bytes. */
export async function pushBlob(url: string, repo: string, data: Buffer): Promise<string> {
  const digest = sha256(data)
  const start = await fetch(`${url}/v2/${repo}/blobs/uploads/`, { method: 'POST' })
  if (start.status !== 202) throw new Error(`POST upload for ${repo}: ${start.status} ${await start.text()}`)
  const location = new URL(start.headers.get('location')!, url)
  location.searchParams.set('digest', digest)
  const put = await fetch(location, { method: 'PUT', body: data, headers: { 'content-type': 'application/octet-stream' } })
  if (put.status !== 201) throw new Error(`PUT blob ${digest}: ${put.status} ${await put.text()}`)
  return digest
}

export async function pushManifest(url: string, repo: string, reference: string, mediaType: string, body: string): Promise<{ digest: string; size: number }> {
  const response = await fetch(`${url}/v2/${repo}/manifests/${reference}`, { method: 'PUT', body, headers: { 'content-type': mediaType } })
  if (response.status !== 201) throw new Error(`PUT manifest ${repo}:${reference}: ${response.status} ${await response.text()}`)
  return { digest: sha256(body), size: Buffer.byteLength(body) }
}

export type TestArch = 'x86_64' | 'aarch64'
const OCI_ARCH = { x86_64: 'amd64', aarch64: 'arm64' } as const
const NIX = { x86_64: 'x86_64-linux', aarch64: 'aarch64-linux' } as const

/** The files of a synthetic mixtape as `mb pull` leaves them, plus the zstd blobs of its disks. */
export interface SyntheticMixtape {
  files: Record<'stereos.img' | 'stereos.qcow2' | 'bzImage' | 'initrd' | 'cmdline' | 'init' | 'mixtape.toml', Buffer>
  zst: { raw: Buffer; qcow2: Buffer }
}

/** A few KiB per file named like the real ones, with a correct mixtape.toml (lib/dist.nix's tables). */
export function syntheticMixtape(
  arch: TestArch,
  options: { name?: string; version?: string; diskBytes?: number; seed?: string; randomDisk?: boolean; qcow2?: Buffer } = {},
): SyntheticMixtape {
  const seed = options.seed ?? randomBytes(4).toString('hex')
  const filler = (label: string, size: number) => {
    const out = Buffer.alloc(size)
    let block = createHash('sha256').update(`${seed}/${arch}/${label}`).digest()
    for (let i = 0; i < size; i += block.length) {
      block.copy(out, i)
      block = createHash('sha256').update(block).digest()
    }
    return out
  }
  // randomDisk: incompressible bytes (a benchmark's worst case), made fast.
  const raw = options.randomDisk
    ? randomBytes(options.diskBytes ?? 16 * 1024)
    : Buffer.concat([filler('raw', options.diskBytes ?? 16 * 1024), Buffer.alloc(8 * 1024)])
  const qcow2 = options.qcow2 ?? qcow2Of(filler('qcow2', options.randomDisk ? 4096 : (options.diskBytes ?? 16 * 1024) / 2))
  const files = {
    'stereos.img': raw,
    'stereos.qcow2': qcow2,
    bzImage: filler('kernel', 6 * 1024),
    initrd: filler('initrd', 4 * 1024),
    cmdline: Buffer.from(`console=${arch === 'x86_64' ? 'ttyS0' : 'ttyAMA0'},115200 init=/nix/store/${seed}-nixos-system/init`),
    init: Buffer.from(`/nix/store/${seed}-nixos-system/init`),
  }
  const zst = { raw: zstdCompressSync(raw), qcow2: zstdCompressSync(qcow2) }
  const entry = (file: string, data: Buffer) => `file = "${file}"\nsha256 = "${sha256(data).slice(7)}"\nsize = ${data.length}\n`
  const compressed = (file: string, data: Buffer) =>
    `compressed_file = "${file}"\ncompressed_sha256 = "${sha256(data).slice(7)}"\ncompressed_size = ${data.length}\n`
  const toml = [
    `name = "${options.name ?? 'coder'}"\nversion = "${options.version ?? `dev-${seed}`}"\narch = "${NIX[arch]}"\n`,
    `[artifacts.raw]\n${entry('stereos.img', raw)}${compressed('stereos.img.zst', zst.raw)}`,
    `[artifacts.qcow2]\n${entry('stereos.qcow2', qcow2)}${compressed('stereos.qcow2.zst', zst.qcow2)}`,
    `[artifacts.kernel.bzimage]\n${entry('bzImage', files.bzImage)}`,
    `[artifacts.kernel.initrd]\n${entry('initrd', files.initrd)}`,
    `[artifacts.kernel.cmdline]\n${entry('cmdline', files.cmdline)}`,
    `[artifacts.kernel.init]\n${entry('init', files.init)}`,
  ].join('\n')
  return { files: { ...files, 'mixtape.toml': Buffer.from(toml) }, zst }
}

/** A real qcow2 image holding `data` (pull and boot inspect qcow2 disks with qemu-img). */
export function qcow2Of(data: Buffer, extra: string[] = []): Buffer {
  const dir = mkdtempSync(join(tmpdir(), 'sh-qcow2-'))
  try {
    writeFileSync(join(dir, 'raw'), Buffer.concat([data, Buffer.alloc((512 - (data.length % 512)) % 512)]))
    const made = spawnSync('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'qcow2', ...extra, join(dir, 'raw'), join(dir, 'out.qcow2')], { encoding: 'utf8' })
    if (made.status !== 0) throw new Error(`qemu-img convert failed: ${made.stderr}`)
    return readFileSync(join(dir, 'out.qcow2'))
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

export interface LayerSpec {
  mediaType: string
  title: string | undefined
  data: Buffer
}

/** mb's build convention: disk (zstd), kernel, initrd, cmdline, init, mixtape.toml, with title annotations. */
export function mixtapeLayers(m: SyntheticMixtape, format: 'raw' | 'qcow2'): LayerSpec[] {
  return [
    format === 'raw'
      ? { mediaType: MT.rawZstd, title: 'stereos.img.zst', data: m.zst.raw }
      : { mediaType: MT.qcow2Zstd, title: 'stereos.qcow2.zst', data: m.zst.qcow2 },
    { mediaType: MT.kernel, title: 'bzImage', data: m.files.bzImage },
    { mediaType: MT.initrd, title: 'initrd', data: m.files.initrd },
    { mediaType: MT.cmdline, title: 'cmdline', data: m.files.cmdline },
    { mediaType: MT.init, title: 'init', data: m.files.init },
    { mediaType: MT.toml, title: 'mixtape.toml', data: m.files['mixtape.toml'] },
  ]
}

/** Push the layers' blobs and an image manifest (by digest); returns its descriptor. */
export async function pushImage(url: string, repo: string, layers: LayerSpec[]): Promise<{ digest: string; size: number }> {
  const config = await pushBlob(url, repo, Buffer.from('{}'))
  const descriptors = []
  for (const layer of layers) {
    const digest = await pushBlob(url, repo, layer.data)
    descriptors.push({
      mediaType: layer.mediaType,
      digest,
      size: layer.data.length,
      ...(layer.title ? { annotations: { 'org.opencontainers.image.title': layer.title } } : {}),
    })
  }
  const body = JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { mediaType: OCI_EMPTY, digest: config, size: 2 }, layers: descriptors })
  return pushManifest(url, repo, sha256(body), OCI_MANIFEST, body)
}

export interface IndexEntry {
  digest: string
  size: number
  platform?: { os: string; architecture: string } | undefined
}

export async function pushIndex(url: string, repo: string, tag: string, entries: IndexEntry[]): Promise<{ digest: string; size: number }> {
  const body = JSON.stringify({
    schemaVersion: 2,
    mediaType: OCI_INDEX,
    manifests: entries.map((e) => ({ mediaType: OCI_MANIFEST, digest: e.digest, size: e.size, ...(e.platform ? { platform: e.platform } : {}) })),
  })
  return pushManifest(url, repo, tag, OCI_INDEX, body)
}

export interface Published {
  index: string
  mixtapes: Record<TestArch, SyntheticMixtape>
  /** Image manifest digest by `<arch>/<format>`. */
  manifests: Record<string, string>
}

/**
 * The fixture guests' layout: one index with linux/amd64 and linux/arm64, each raw then qcow2 (the
 * order of mb's build convention). `layers` can alter the layers of one arch/format (faults).
 */
export async function publishMixtape(
  url: string,
  repo: string,
  tag: string,
  options: {
    archs?: TestArch[]
    formats?: ('raw' | 'qcow2')[]
    mixtapes?: Partial<Record<TestArch, SyntheticMixtape>>
    layers?: (arch: TestArch, format: 'raw' | 'qcow2', layers: LayerSpec[]) => LayerSpec[]
  } = {},
): Promise<Published> {
  const archs = options.archs ?? ['x86_64', 'aarch64']
  const formats = options.formats ?? ['raw', 'qcow2']
  const mixtapes = {} as Record<TestArch, SyntheticMixtape>
  const manifests: Record<string, string> = {}
  const entries: IndexEntry[] = []
  for (const arch of archs) {
    const m = (mixtapes[arch] = options.mixtapes?.[arch] ?? syntheticMixtape(arch))
    for (const format of formats) {
      const layers = options.layers ? options.layers(arch, format, mixtapeLayers(m, format)) : mixtapeLayers(m, format)
      const image = await pushImage(url, repo, layers)
      manifests[`${arch}/${format}`] = image.digest
      entries.push({ ...image, platform: { os: 'linux', architecture: OCI_ARCH[arch] } })
    }
  }
  const index = await pushIndex(url, repo, tag, entries)
  return { index: index.digest, mixtapes, manifests }
}

export interface ProxyRequest {
  method: string
  path: string
  range: string | undefined
  authorization: string | undefined
}

/** What the proxy does instead of forwarding faithfully. */
export type Fault =
  | { status: number; body?: string; headers?: Record<string, string> }
  /** Forward the headers, then only the first `bytes` of the body, then drop the connection. */
  | { truncateAt: number }
  /** Forward with one byte of the body flipped. */
  | { flipByteAt: number }
  /** Forward with this body instead (Content-Length fixed up). */
  | { body: Buffer }

export interface Proxy {
  host: string
  url: string
  requests: ProxyRequest[]
  tokenRequests: { authorization: string | undefined; query: string }[]
  /** Decide per request; undefined = forward faithfully. */
  fault: ((req: ProxyRequest, nth: number) => Fault | undefined) | undefined
  blobGets(): ProxyRequest[]
  reset(): void
  stop(): Promise<void>
}

/**
 * An HTTP proxy on 127.0.0.1 in front of `target`: counts requests, injects faults, and with `auth`
 * requires a bearer token that its own /token endpoint hands out (checking Basic credentials when
 * `auth` names a user) — the registry token flow of the distribution spec.
 */
export async function startProxy(target: string, options: { auth?: { username: string; password: string } | 'anonymous' } = {}): Promise<Proxy> {
  const requests: ProxyRequest[] = []
  const tokenRequests: Proxy['tokenRequests'] = []
  const tokens = new Set<string>()
  const counts = new Map<string, number>()
  let origin = ''
  const proxy: Proxy = {
    host: '',
    url: '',
    requests,
    tokenRequests,
    fault: undefined,
    blobGets: () => requests.filter((r) => r.method === 'GET' && /\/blobs\/sha256:/.test(r.path)),
    reset: () => {
      requests.length = 0
      tokenRequests.length = 0
      counts.clear()
    },
    stop: async () => {
      server.closeAllConnections()
      await new Promise((resolve) => server.close(resolve))
    },
  }
  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const path = req.url ?? '/'
    if (path.startsWith('/token')) {
      tokenRequests.push({ authorization: req.headers.authorization, query: path.slice(path.indexOf('?') + 1) })
      const auth = options.auth
      if (auth && auth !== 'anonymous' && req.headers.authorization !== `Basic ${Buffer.from(`${auth.username}:${auth.password}`).toString('base64')}`) {
        res.writeHead(401, { 'content-type': 'application/json' }).end('{"errors":[{"code":"UNAUTHORIZED"}]}')
        return
      }
      const token = randomBytes(12).toString('hex')
      tokens.add(token)
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token, expires_in: 300 }))
      return
    }
    const entry: ProxyRequest = { method: req.method ?? 'GET', path, range: req.headers.range, authorization: req.headers.authorization }
    requests.push(entry)
    if (options.auth && path.startsWith('/v2/')) {
      const token = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1]
      if (!token || !tokens.has(token)) {
        const repo = /^\/v2\/(.+)\/(?:manifests|blobs)\//.exec(path)?.[1] ?? ''
        res
          .writeHead(401, {
            'www-authenticate': `Bearer realm="${origin}/token",service="test-registry",scope="repository:${repo}:pull"`,
            'content-type': 'application/json',
          })
          .end('{"errors":[{"code":"UNAUTHORIZED"}]}')
        return
      }
    }
    const key = `${entry.method} ${path}`
    const nth = (counts.get(key) ?? 0) + 1
    counts.set(key, nth)
    const fault = proxy.fault?.(entry, nth)
    if (fault && 'status' in fault) {
      res.writeHead(fault.status, { 'content-type': 'application/json', ...fault.headers }).end(fault.body ?? '{"errors":[{"code":"UNAVAILABLE"}]}')
      return
    }
    const headers = { ...req.headers }
    delete headers.authorization
    headers.host = new URL(target).host
    const upstream = request(`${target}${path}`, { method: req.method, headers }, (up) => {
      if (fault && 'body' in fault) {
        up.resume()
        res.writeHead(up.statusCode ?? 502, { ...up.headers, 'content-length': String(fault.body.length) }).end(fault.body)
        return
      }
      res.writeHead(up.statusCode ?? 502, up.headers)
      let sent = 0
      up.on('data', (chunk: Buffer) => {
        if (fault && 'truncateAt' in fault) {
          const room = fault.truncateAt - sent
          if (room > 0) res.write(chunk.subarray(0, room))
          sent += chunk.length
          if (sent >= fault.truncateAt) {
            // Flush what was written, then FIN: the client sees a body shorter than Content-Length.
            up.destroy()
            res.socket?.end()
          }
          return
        }
        if (fault && 'flipByteAt' in fault && fault.flipByteAt >= sent && fault.flipByteAt < sent + chunk.length) {
          chunk = Buffer.from(chunk)
          chunk[fault.flipByteAt - sent]! ^= 0xff
        }
        sent += chunk.length
        res.write(chunk)
      })
      up.on('end', () => res.end())
      up.on('error', () => res.destroy())
    })
    upstream.on('error', () => res.destroy())
    req.pipe(upstream)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  origin = `http://127.0.0.1:${port}`
  proxy.host = `127.0.0.1:${port}`
  proxy.url = origin
  return proxy
}

/**
 * One registry and a counting proxy in front of it for the calling test file, started before
 * its tests and stopped (with its temp dirs removed) after them.
 */
export function registryWithProxy(ready: (registry: Registry, proxy: Proxy) => void | Promise<void>): void {
  let registry: Registry | undefined
  let proxy: Proxy | undefined
  beforeAll(async () => {
    registry = await startRegistry()
    proxy = await startProxy(registry.url)
    await ready(registry, proxy)
  })
  afterAll(async () => {
    await proxy?.stop()
    await registry?.stop()
    removeTempDirs()
  })
}
