import { createHash } from 'node:crypto'
import { copyFileSync, createReadStream, createWriteStream, mkdtempSync, renameSync, rmSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { Transform } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import zlib from 'node:zlib'
import { execa } from 'execa'
import { firstLine, HarnessError } from '../errors.js'
import { readLogTail } from '../host/log-tail.js'
import { readRecord } from '../mixtape/cache.js'
import type { LogSink } from '../log.js'
import { sshRunAsRoot } from '../sandbox/ssh-bootstrap.js'
import { templateKey } from '../template/key.js'
import { saveState } from '../template/migration.js'
import type { QmpClient } from '../vmm/qmp.js'
import { writeContainer, type MemberSource } from './container.js'
import { CAPTURE_FORMAT, type CaptureManifest, harnessVersion, MANIFEST_MEMBER } from './manifest.js'
import { diskDigest } from './mixtape-digest.js'
import { type Needle, needleBytes, needleScanner, redact, SCAN_CHUNK_BYTES, zstdFileHolds } from './scan.js'
import { awaitScrubbed, logLength, scrubLauncher } from './scrub.js'
import type { CaptureSource } from './source.js'

export const STATE_MEMBER = 'state.zst'
export const DISK_MEMBER = 'disk.qcow2.zst'
export const LOG_MEMBERS = { serial: 'serial.log', qemu: 'qemu.log' } as const
/** Bytes per second: as fast as the disk takes it. */
const MIGRATE_MAX_BANDWIDTH = 64 * 1024 ** 3
/** The last bytes of each log a capture keeps. */
export const CAPTURE_LOG_BYTES = 4 * 1024 * 1024

type Json = CaptureManifest['context'][string]

export interface CaptureOptions {
  /** Free-form, JSON: what the capture is of (`{ file, failedTests }`). At most 64 KiB as JSON. */
  context?: Record<string, Json>
  /** How long the guest's scrub may take (default 60 s). */
  scrubTimeoutMs?: number
}

export interface CaptureReport {
  path: string
  bytes: number
  ram: CaptureManifest['ram']
  disk: CaptureManifest['disk']
  timings: CaptureManifest['timings']
}

export interface CaptureTarget {
  source: CaptureSource
  vmDir: string
  logs: { serial: string; qemu: string }
  qmp: () => Promise<QmpClient>
  running: () => boolean
  log: LogSink
}

/**
 * Save a running VM into one file at `path` (see README "Capturing a failing VM"): the guest is
 * scrubbed of what the host gave it (scrub.ts), paused and saved (RAM and devices by QMP
 * migration, as templates are), its disk copied while paused and rebased onto the mixtape's image
 * alone, and then QEMU quits (shutdown() only removes the VM dir). The saved RAM and disk
 * are searched for every secret value; what holds one is left out, with the reason in the manifest.
 */
export async function captureVm(target: CaptureTarget, path: string, options: CaptureOptions = {}): Promise<CaptureReport> {
  const began = performance.now()
  const { source, logs } = target
  const context = options.context ?? {}
  if (JSON.stringify(context).length > 64 * 1024)
    throw new HarnessError('INVALID_OPTIONS', 'capture context is over 64 KiB as JSON', { fix: 'pass names, not contents' })
  if (!source.admin)
    throw new HarnessError('CAPTURE', 'this VM cannot be captured: the host has no SSH path to it (network none without vsock)', {
      fix: 'capture needs admin over SSH to remove the secrets first: boot with a network or a vsock control plane',
    })
  const staging = mkdtempSync(join(target.vmDir, 'capture-'))
  const partial = `${path}.partial-${process.pid}`
  try {
    const digest = await diskDigest(source.mixtape)
    // Scrub: detached as root, done when it says so on the console.
    const from = logLength(logs.serial)
    const started = await sshRunAsRoot(source.admin, scrubLauncher(), 30_000)
    if (started.code !== 0 || !started.stdout.includes('started'))
      throw new HarnessError('CAPTURE', `the guest's scrub did not start (${started.stderr.trim() || `exit ${started.code}`}); nothing was captured`, {
        fix: 'capture needs passwordless sudo for admin in the guest (stereOS grants it)',
      })
    const busy = await awaitScrubbed(logs.serial, from, options.scrubTimeoutMs ?? 60_000, () => !target.running())
    for (const line of busy) target.log(line)
    const scrubbed = performance.now()

    // Save: paused from the migration on; the disk is copied before the guest runs again.
    const state = join(staging, STATE_MEMBER)
    const disk = join(staging, 'disk.qcow2')
    const qmp = await target.qmp()
    let copied = false
    try {
      // QEMU's default cap (128 MiB/s) is for a live migration over a network; this one goes to
      // a local file while the guest is paused (measured: 0.85 s to 0.6 s for the fixture's 118 MB).
      await qmp.execute('migrate-set-parameters', { 'max-bandwidth': MIGRATE_MAX_BANDWIDTH })
      await saveState(qmp, state, 120_000)
      copyFileSync(target.source.vmDisk, disk)
      copied = true
    } catch (err) {
      throw new HarnessError('CAPTURE', `saving the VM failed: ${firstLine(err)}`, { fix: `read ${logs.qemu}`, cause: err })
    } finally {
      // Saved, the VM is spent (no agent, keys or shares) and ends here: its stereosd, started
      // afresh by the scrub, may not answer a graceful shutdown yet. A failed save leaves it running.
      await qmp.execute(copied ? 'quit' : 'cont').catch(() => undefined)
    }
    const saved = performance.now()

    // The saved RAM is searched while the disk is rebased, searched and packed (one read of it).
    const needles = needleBytes(source.secretValues)
    const ramScan = zstdFileHolds(state, needles).then((holds) => ({ holds, at: performance.now() }))
    const packed = join(staging, DISK_MEMBER)
    const diskWork = (async () => {
      // Self-contained: the delta over the mixtape's image alone (a template's disk may be between).
      await qemuImg(['rebase', '-q', '-U', '-f', 'qcow2', '-b', source.mixtape.disk.path, '-F', source.mixtape.disk.format, disk])
      const rebased = performance.now()
      return { rebased, ...(await packScanned(disk, packed, needles)), at: performance.now() }
    })()
    const [ramScanned, diskPacked] = await Promise.all([ramScan, diskWork])
    const diskHolds = diskPacked.holds
    const ramHolds = ramScanned.holds
    const ram: CaptureManifest['ram'] =
      diskHolds || ramHolds
        ? {
            included: false,
            reason: diskHolds ? `the disk holds ${diskHolds}, and RAM goes with it` : `the saved RAM still holds ${ramHolds} after the scrub`,
          }
        : { included: true }
    const diskPart: CaptureManifest['disk'] = diskHolds ? { included: false, reason: `the disk holds ${diskHolds}` } : { included: true }
    if (!ram.included) target.log(`capture ${path}: ${ram.reason}; it keeps ${diskHolds ? 'the logs only' : 'the disk and the logs'}, and cannot be restored`)

    const members: MemberSource[] = []
    const known: CaptureManifest['files'] = {}
    if (ram.included) members.push({ name: STATE_MEMBER, file: state })
    if (diskPart.included && diskPacked.entry) {
      members.push({ name: DISK_MEMBER, file: packed })
      known[DISK_MEMBER] = diskPacked.entry
    }
    for (const [key, name] of Object.entries(LOG_MEMBERS))
      members.push({ name, data: redact(readLogTail(logs[key as keyof typeof LOG_MEMBERS], CAPTURE_LOG_BYTES), source.secretValues) })

    const files: CaptureManifest['files'] = {}
    for (const member of members) files[member.name] = known[member.name] ?? (await fileEntry(member))
    const describe = templateKey({ spec: source.spec, qemuBinary: source.qemuBinary, mixtape: source.mixtape, diskBytes: source.diskBytes }).describe
    const ms = (from: number, to: number) => Math.round(to - from)
    const timings: CaptureManifest['timings'] = {
      scrubMs: ms(began, scrubbed),
      saveMs: ms(scrubbed, saved),
      rebaseMs: ms(saved, diskPacked.rebased),
      diskMs: ms(diskPacked.rebased, diskPacked.at),
      ramScanMs: ms(saved, ramScanned.at),
      totalMs: 0,
    }
    const manifest: CaptureManifest = {
      format: CAPTURE_FORMAT,
      harness: { version: harnessVersion(), ...(source.shareVersion ? { share: source.shareVersion } : {}) },
      created: new Date().toISOString(),
      arch: source.arch,
      accel: source.spec.accel,
      machine: {
        qemu: describe.qemu,
        type: source.spec.profile.machine,
        cpu: describe.cpu,
        cpus: source.spec.cpus,
        memoryMiB: source.spec.memoryMiB,
        diskBytes: source.diskBytes,
      },
      mixtape: {
        ref: source.mixtape.ref,
        ...(source.mixtape.version ? { version: source.mixtape.version } : {}),
        ...pulledFrom(source.mixtape.dir),
        disk: { file: digest.file, format: digest.format, sha256: digest.sha256, bytes: digest.bytes },
      },
      vm: { controlPlane: source.controlPlane, network: source.network, bootstrap: source.bootstrap, shareImage: source.spec.imageDisk !== undefined },
      shares: source.shares,
      ram,
      disk: diskPart,
      files,
      context,
      timings,
    }
    timings.totalMs = Math.round(performance.now() - began)
    await writeContainer(partial, [{ name: MANIFEST_MEMBER, data: Buffer.from(`${JSON.stringify(manifest, null, 2)}\n`) }, ...members])
    renameSync(partial, path)
    return { path, bytes: statSync(path).size, ram, disk: diskPart, timings }
  } finally {
    rmSync(partial, { force: true })
    rmSync(staging, { recursive: true, force: true })
  }
}

/**
 * Pack `file` with zstd into `packed` in one read, searching it for the needles as it goes: what
 * it holds (then `packed` is left incomplete), or the packed file's size and sha256.
 */
async function packScanned(file: string, packed: string, needles: readonly Needle[]): Promise<{ holds?: string; entry?: { bytes: number; sha256: string } }> {
  const scan = needleScanner(needles)
  const hash = createHash('sha256')
  let bytes = 0
  let holds: string | undefined
  const stop = new Error('a needle was found')
  try {
    await pipeline(
      createReadStream(file, { highWaterMark: SCAN_CHUNK_BYTES }),
      new Transform({
        transform(chunk: Buffer, _enc, done) {
          holds = scan(chunk)
          done(holds ? stop : null, chunk)
        },
      }),
      zlib.createZstdCompress(),
      new Transform({
        transform(chunk: Buffer, _enc, done) {
          hash.update(chunk)
          bytes += chunk.length
          done(null, chunk)
        },
      }),
      createWriteStream(packed, { mode: 0o600 }),
    )
  } catch (err) {
    if (err !== stop) throw err
  }
  return holds ? { holds } : { entry: { bytes, sha256: hash.digest('hex') } }
}

async function fileEntry(member: MemberSource): Promise<{ bytes: number; sha256: string }> {
  const hash = createHash('sha256')
  if (member.data) return { bytes: member.data.length, sha256: hash.update(member.data).digest('hex') }
  let bytes = 0
  for await (const chunk of createReadStream(member.file ?? '') as AsyncIterable<Buffer>) {
    hash.update(chunk)
    bytes += chunk.length
  }
  return { bytes, sha256: hash.digest('hex') }
}

async function qemuImg(args: string[]): Promise<void> {
  const result = await execa('qemu-img', args, { reject: false })
  if (result.exitCode !== 0)
    throw new HarnessError('CAPTURE', `qemu-img ${args[0]} failed: ${result.stderr.trim() || result.exitCode}`, {
      fix: 'check the free space of the runtime dir',
    })
}

/** The registry reference, by digest, the mixtape was pulled from (its pull record), if it was pulled. */
function pulledFrom(dir: string): { pull?: string } {
  const record = readRecord(dir)
  return record && /^sha256:[0-9a-f]{64}$/.test(record.digest) ? { pull: `${record.registry}/${record.repository}@${record.digest}` } : {}
}
