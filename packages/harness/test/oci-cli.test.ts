import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { execa } from 'execa'
import { describe, expect, test } from 'vitest'
import type { PullResult } from '../src/mixtape/pull.js'
import { publishMixtape, pushManifest, sha256, type Proxy, type Published, type Registry, tempDir, registryWithProxy } from './support/registry.js'

const cli = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'cli', 'main.js')

let registry: Registry
let proxy: Proxy
let published: Published
registryWithProxy(async (r, p) => {
  registry = r
  proxy = p
  published = await publishMixtape(registry.url, 'mixtapes/coder', 'v1')
})

// Its own harness cache too: `prune` must not touch the templates of this machine's user.
const run = (args: string[], base: string) =>
  execa(process.execPath, [cli, ...args], { reject: false, env: { MB_CONFIG_DIR: base, STEREOS_HARNESS_CACHE: join(base, 'harness-cache') }, timeout: 60_000 })

// Each case starts Node processes; 8 at once on two cores take a while.
describe('stereos-harness pull / ls / rm / prune (built bin, real registry)', { timeout: 120_000 }, () => {
  test('8 processes pulling one image at once download each blob once, and all get the same dir', async () => {
    const base = tempDir('sh-mb-')
    proxy.reset()
    const results = await Promise.all(Array.from({ length: 8 }, () => run(['pull', `${proxy.host}/mixtapes/coder:v1`, '--arch', 'x86_64', '--json'], base)))
    for (const r of results) expect(r.exitCode, r.stderr).toBe(0)
    const parsed = results.map((r) => JSON.parse(r.stdout) as PullResult)
    expect(new Set(parsed.map((p) => p.dir))).toEqual(new Set([join(base, 'mixtapes', 'coder', 'v1')]))
    expect(parsed.filter((p) => !p.upToDate)).toHaveLength(1)
    const gets = proxy.blobGets().map((r) => r.path.slice(r.path.lastIndexOf('/') + 1))
    expect(gets).toHaveLength(6)
    expect(new Set(gets).size).toBe(6)
    expect(gets).toContain(sha256(published.mixtapes.x86_64.zst.raw))
    expect(readFileSync(join(base, 'mixtapes', 'coder', 'v1', 'stereos.img')).equals(published.mixtapes.x86_64.files['stereos.img'])).toBe(true)
  })

  test('processes pulling two tags of the same image at once still download each blob once (per-blob lock)', async () => {
    const body = await fetch(`${registry.url}/v2/mixtapes/coder/manifests/v1`, { headers: { accept: 'application/vnd.oci.image.index.v1+json' } }).then((r) =>
      r.text(),
    )
    await pushManifest(registry.url, 'mixtapes/coder', 'v2', 'application/vnd.oci.image.index.v1+json', body)
    const base = tempDir('sh-mb-')
    proxy.reset()
    const results = await Promise.all(
      ['v1', 'v2', 'v1', 'v2'].map((tag) => run(['pull', `${proxy.host}/mixtapes/coder:${tag}`, '--arch', 'x86_64', '--json'], base)),
    )
    for (const r of results) expect(r.exitCode, r.stderr).toBe(0)
    expect(proxy.blobGets()).toHaveLength(6)
    expect(readdirSync(join(base, 'mixtapes', 'coder')).sort()).toEqual(['v1', 'v2'])
  })

  test('pull prints plain progress lines when stderr is not a terminal, and the dir on stdout', async () => {
    const base = tempDir('sh-mb-')
    const r = await run(['pull', `${proxy.host}/mixtapes/coder:v1`, '--arch', 'aarch64'], base)
    expect(r.exitCode, r.stderr).toBe(0)
    expect(r.stderr).toMatch(new RegExp(`^pull ${proxy.host.replace(/\./g, '\\.')}/mixtapes/coder:v1: sha256:[0-9a-f]{12} → linux/arm64 raw`, 'm'))
    expect(r.stderr).toMatch(/^ {2}stereos\.img\.zst \d+\.\d KiB$/m)
    expect(r.stderr).toMatch(/^pulled .* into .*mixtapes\/coder\/v1 \(/m)
    expect(r.stderr).not.toContain('\r')
    expect(r.stdout).toBe(`pulled: ${proxy.host}/mixtapes/coder:v1 ${published.index} → ${join(base, 'mixtapes', 'coder', 'v1')}`)
  })

  test('ls lists ours with digest and mb-pulled dirs as such; rm removes a tag and the blobs only it used; prune clears leftovers', async () => {
    const base = tempDir('sh-mb-')
    expect((await run(['pull', `${proxy.host}/mixtapes/coder:v1`, '--arch', 'x86_64'], base)).exitCode).toBe(0)
    // A dir as `mb pull` leaves it: files only.
    const mbDir = join(base, 'mixtapes', 'base', 'latest')
    await execa('mkdir', ['-p', mbDir])
    await execa('cp', [join(base, 'mixtapes', 'coder', 'v1', 'stereos.img'), mbDir])

    const ls = await run(['ls', '--json'], base)
    expect(JSON.parse(ls.stdout)).toEqual([
      expect.objectContaining({ name: 'base', tag: 'latest', pulledBy: 'mb', dir: mbDir }),
      expect.objectContaining({ name: 'coder', tag: 'v1', pulledBy: 'stereos-harness', digest: published.index, format: 'raw', platform: 'linux/amd64' }),
    ])
    const table = (await run(['ls'], base)).stdout.split('\n')
    expect(table[0]).toMatch(/^NAME\s+TAG\s+SIZE\s+DIGEST\s+PLATFORM\s+SOURCE$/)
    expect(table[1]).toMatch(/^base\s+latest\s+[\d.]+ KiB\s+-\s+-\s+\(mb pull\)$/)

    const blobs = join(base, 'stereos-harness', 'blobs', 'sha256')
    expect(readdirSync(blobs)).toHaveLength(6)
    const rm = await run(['rm', 'coder:v1'], base)
    expect(rm.exitCode, rm.stderr).toBe(0)
    expect(rm.stdout).toContain(`removed coder:v1 (${join(base, 'mixtapes', 'coder', 'v1')})`)
    expect(rm.stdout).toMatch(/freed [\d.]+ KiB of blobs no other tag uses/)
    expect(existsSync(join(base, 'mixtapes', 'coder'))).toBe(false)
    expect(readdirSync(blobs)).toEqual([])

    const missing = await run(['rm', 'coder:v1'], base)
    expect(missing.exitCode).toBe(1)
    expect(missing.stderr).toContain('mixtape coder:v1 is not in the cache')

    // A pull that dies mid-way leaves a partial blob; prune removes it.
    // (The first GET is cut short, the resume is answered 404: it fails fast, without backoff.)
    proxy.fault = (req) => (req.path.endsWith(sha256(published.mixtapes.x86_64.zst.raw)) ? (req.range ? { status: 404 } : { truncateAt: 1000 }) : undefined)
    const failed = await run(['pull', `${proxy.host}/mixtapes/coder:v1`, '--arch', 'x86_64'], base)
    proxy.fault = undefined
    expect(failed.exitCode).toBe(1)
    expect(failed.stderr).toMatch(/stereos-harness: registry 127\.0\.0\.1:\d+ has no blob sha256:[0-9a-f]{64} that mixtapes\/coder's manifest lists \(404\)/)
    expect(existsSync(join(base, 'mixtapes', 'coder'))).toBe(false)
    const prune = await run(['prune', '--json'], base)
    expect(JSON.parse(prune.stdout)).toMatchObject({ partials: [sha256(published.mixtapes.x86_64.zst.raw)] })
    expect(readdirSync(join(base, 'stereos-harness', 'partial', 'sha256'))).toEqual([])
    // mb's own dir is left alone by rm of another name and by prune.
    expect(existsSync(join(mbDir, 'stereos.img'))).toBe(true)
  })

  test('bad references and missing arguments are usage errors with exit 1', async () => {
    const base = tempDir('sh-mb-')
    const bad = await run(['pull', 'Coder:latest'], base)
    expect(bad.exitCode).toBe(1)
    expect(bad.stderr).toContain('"Coder:latest" is not a mixtape reference')
    expect((await run(['pull'], base)).stderr).toContain('pull needs a reference')
    expect((await run(['ls', 'extra'], base)).stderr).toContain('unexpected argument(s) for ls: extra')
  })
})
