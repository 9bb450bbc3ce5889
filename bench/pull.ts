// Pull throughput vs curl of the same blobs from the same local registry, same run.
//
// A real registry (Debian's docker-registry 2.8) on 127.0.0.1 serves a two-arch mixtape index
// whose x86_64 raw disk is SIZE MB of random (incompressible) bytes, zstd-compressed. Each run
// alternates: curl fetching the chosen manifest's blobs to files (one process, one connection,
// the baseline), and pullMixtape into a fresh cache (manifests, platform pick, locks, digest
// checks while streaming, zstd decompression, mixtape.toml checksums, atomic rename). Then the
// time to resolve the cached image as a boot does (no network). For scale it also times a shell
// script doing the same work for the disk blob (curl, sha256sum, zstd -d, sha256sum). Ratio last.
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { pullMixtape, resolveMixtape } from '@stereos/harness'
import { runInNewContext } from 'node:vm'
import { setFlagsFromString } from 'node:v8'
import { mixtapeLayers, publishMixtape, sha256, startRegistry, syntheticMixtape } from '../packages/harness/test/support/registry.ts'
import type { Summary } from './stats.ts'
import { median, seconds } from './stats.ts'

export async function main(argv: string[]): Promise<Summary> {
  const { values } = parseArgs({ args: argv, options: { runs: { type: 'string', default: '3' }, size: { type: 'string', default: '200' } } })
  const runs = Math.max(1, Number(values.runs))
  const sizeMB = Math.max(1, Number(values.size))
  const say = (line: string) => process.stdout.write(`${line}\n`)
  const work = mkdtempSync(join(tmpdir(), 'sh-bench-pull-'))
  const registry = await startRegistry()
  try {
    say(
      `pull benchmark: ${sizeMB} MB random disk (zstd), docker-registry 2.8 on ${registry.host}, ${runs} runs each, alternating (Node ${process.version}, ${process.arch})`,
    )
    const { blobs, unpacked } = await publish(registry.url, sizeMB)
    const bytes = blobs.reduce((sum, b) => sum + b.size, 0)
    say(
      `blobs of linux/amd64 raw: ${blobs.length}, ${(bytes / 1e6).toFixed(1)} MB (disk layer ${(blobs[0]!.size / 1e6).toFixed(1)} MB compressed, ${(unpacked / 1e6).toFixed(1)} MB unpacked)`,
    )

    const ref = `${registry.host}/mixtapes/bench:latest`
    const curlTimes: number[] = []
    const shellTimes: number[] = []
    const pullTimes: number[] = []
    const curlCpu: number[] = []
    const pullCpu: number[] = []
    let lastBase = ''
    for (let i = 0; i < runs; i++) {
      const curlDir = mkdtempSync(join(work, 'curl-'))
      const args = ['-sS', '--fail'].concat(
        ...blobs.map((b) => [`${registry.url}/v2/mixtapes/bench/blobs/${b.digest}`, '-o', join(curlDir, b.digest.slice(7))]),
      )
      let started = performance.now()
      // bash's `times` reports the CPU its children (curl) used.
      const times = execFileSync('bash', ['-c', 'curl "$@" && times', 'bash', ...args], { encoding: 'utf8' })
      curlTimes.push(performance.now() - started)
      curlCpu.push(childCpuMs(times))
      rmSync(curlDir, { recursive: true, force: true })

      // The same work as a shell script: download, check the digest, unpack, checksum the disk.
      const shellDir = mkdtempSync(join(work, 'sh-'))
      const disk = blobs[0]!
      const script = `curl -sS --fail -o "$1/blob" "$2" && sha256sum "$1/blob" >/dev/null && zstd -q -d "$1/blob" -o "$1/disk" && sha256sum "$1/disk" >/dev/null`
      started = performance.now()
      execFileSync('sh', ['-c', script, 'sh', shellDir, `${registry.url}/v2/mixtapes/bench/blobs/${disk.digest}`])
      shellTimes.push(performance.now() - started)
      rmSync(shellDir, { recursive: true, force: true })

      if (lastBase) rmSync(lastBase, { recursive: true, force: true })
      lastBase = mkdtempSync(join(work, 'mb-'))
      started = performance.now()
      const cpu = process.cpuUsage()
      const result = await pullMixtape(ref, { base: lastBase, arch: 'x86_64' })
      pullTimes.push(performance.now() - started)
      const used = process.cpuUsage(cpu)
      pullCpu.push((used.user + used.system) / 1000)
      if (result.downloaded !== bytes) throw new Error(`pull downloaded ${result.downloaded} bytes, expected ${bytes}`)
      const mbps = (ms: number) => `${((bytes / 1e6) * (1000 / ms)).toFixed(0)} MB/s`
      say(
        `run ${i + 1}: curl ${seconds(curlTimes.at(-1)!)} (${mbps(curlTimes.at(-1)!)})   curl+sha256sum+zstd -d+sha256sum (disk only) ${seconds(shellTimes.at(-1)!)}   pull ${seconds(pullTimes.at(-1)!)} (${mbps(pullTimes.at(-1)!)})`,
      )
    }

    // Resolving the cached image, as Sandbox.boot does (no network request).
    const resolveTimes: number[] = []
    process.env.MB_CONFIG_DIR = lastBase
    for (let i = 0; i < 20; i++) {
      const started = performance.now()
      await resolveMixtape(ref, { arch: 'x86_64', log: () => undefined })
      resolveTimes.push(performance.now() - started)
    }
    delete process.env.MB_CONFIG_DIR

    const curl = median(curlTimes)
    const pull = median(pullTimes)
    say(`median curl (blobs to files): ${seconds(curl)} = ${((bytes / 1e6) * (1000 / curl)).toFixed(0)} MB/s`)
    say(`median pull (verified, unpacked, installed): ${seconds(pull)} = ${((bytes / 1e6) * (1000 / pull)).toFixed(0)} MB/s`)
    say(`median CPU (user+sys, all threads; the registry's own is not counted): curl ${seconds(median(curlCpu))}, pull ${seconds(median(pullCpu))}`)
    say(
      `median shell equivalent (curl, sha256sum, zstd -d, sha256sum; disk blob only): ${seconds(median(shellTimes))}; pull / shell time ratio ${(median(shellTimes) / pull).toFixed(2)}`,
    )
    say(`resolve a cached image (median of 20): ${median(resolveTimes).toFixed(2)} ms`)
    say(`ratio pull / curl throughput: ${(curl / pull).toFixed(2)} (target >= 0.8)`)
    return {
      bytes,
      curlMs: curl,
      pullMs: pull,
      shellMs: median(shellTimes),
      cachedResolveMs: median(resolveTimes),
      pullCurlRatio: curl / pull,
      pullShellRatio: median(shellTimes) / pull,
    }
  } finally {
    await registry.stop()
    rmSync(work, { recursive: true, force: true })
  }
}

/** Publish, keep only digests and sizes, and let the synthetic data go: a large heap makes every fork (the lock holders) slower. */
async function publish(url: string, sizeMB: number): Promise<{ blobs: { digest: string; size: number }[]; unpacked: number }> {
  let mixtape: ReturnType<typeof syntheticMixtape> | undefined = syntheticMixtape('x86_64', { diskBytes: sizeMB * 1e6, randomDisk: true })
  await publishMixtape(url, 'mixtapes/bench', 'latest', { archs: ['x86_64', 'aarch64'], mixtapes: { x86_64: mixtape, aarch64: syntheticMixtape('aarch64') } })
  const blobs = mixtapeLayers(mixtape, 'raw').map((layer) => ({ digest: sha256(layer.data), size: layer.data.length }))
  const unpacked = mixtape.files['stereos.img'].length
  mixtape = undefined
  setFlagsFromString('--expose-gc')
  ;(runInNewContext('gc') as () => void)()
  return { blobs, unpacked }
}

/** `times` prints the shell's and then its children's user and system time (`0m0.012s 0m0.034s`). */
function childCpuMs(output: string): number {
  const line = output.trim().split('\n').at(-1) ?? ''
  return [...line.matchAll(/(\d+)m([\d.]+)s/g)].reduce((sum, m) => sum + (Number(m[1]) * 60 + Number(m[2])) * 1000, 0)
}
