import { createHash } from 'node:crypto'
import { createWriteStream, mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { Transform } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import zlib from 'node:zlib'
import { execa } from 'execa'
import { HarnessError } from '../errors.js'
import { hostArch } from '../host/arch.js'
import { type Member, memberStream, readMember, readMembers } from './container.js'
import { CAPTURE_FORMAT, CaptureManifest, harnessVersion, MANIFEST_MAX_BYTES, MANIFEST_MEMBER, parseManifestHead } from './manifest.js'
import { DISK_MEMBER, STATE_MEMBER } from './save.js'

export interface OpenedCapture {
  path: string
  manifest: CaptureManifest
  members: Member[]
}

function damaged(path: string, why: string): HarnessError {
  return new HarnessError('CAPTURE', `${path} is not a readable capture: ${why}`, { fix: 'the file is damaged or incomplete: download it again' })
}

/** The container's members and its manifest; another capture format is refused in one line, naming who made it. */
export function openCapture(path: string): OpenedCapture {
  const members = readMembers(path)
  const first = members[0]
  if (first?.name !== MANIFEST_MEMBER) throw damaged(path, `its first member is ${first?.name ?? 'missing'}, not ${MANIFEST_MEMBER}`)
  const text = readMember(path, first, MANIFEST_MAX_BYTES).toString('utf8')
  const head = parseManifestHead(text)
  if (!head) throw damaged(path, 'its manifest is not JSON with a format number')
  if (head.format !== CAPTURE_FORMAT)
    throw new HarnessError(
      'CAPTURE',
      `${path} is capture format ${head.format} (harness ${head.harness?.version ?? 'unknown'}); this harness (${harnessVersion()}) restores format ${CAPTURE_FORMAT}`,
      { fix: `open it with that harness version, or take its logs and disk with \`stereos-harness debug ${path} --extract DIR\`` },
    )
  const parsed = CaptureManifest.safeParse(JSON.parse(text))
  if (!parsed.success)
    throw damaged(path, `its manifest does not match format ${CAPTURE_FORMAT} (${parsed.error.issues[0]?.path.join('.')}: ${parsed.error.issues[0]?.message})`)
  for (const member of members.slice(1)) {
    const entry = parsed.data.files[member.name]
    if (!entry || entry.bytes !== member.size) throw damaged(path, `${member.name} is not the member its manifest lists`)
  }
  return { path, manifest: parsed.data, members }
}

/** Why this host cannot restore the capture, in one line, or undefined. */
export function restoreRefusal(capture: OpenedCapture, arch = hostArch()): string | undefined {
  const { manifest } = capture
  if (!manifest.ram.included) return `${capture.path} holds no RAM (${manifest.ram.reason ?? 'left out'}), so it cannot be restored`
  if (!manifest.disk.included) return `${capture.path} holds no disk (${manifest.disk.reason ?? 'left out'}), so it cannot be restored`
  if (manifest.accel === 'kvm' && manifest.arch !== arch)
    return `${capture.path} was taken under KVM on ${manifest.arch}; this host is ${arch ?? process.arch}, and a KVM capture restores only on its own arch`
  return undefined
}

export interface Extracted {
  state?: string
  disk?: string
  files: string[]
}

/**
 * Write the capture's members into `dir`: the manifest, the logs, the migration stream as it is
 * (QEMU reads it through zstd) and the disk decompressed (at most the disk's size and some for
 * qcow2's tables). Each member is checked against the manifest's sha256 as it is written.
 */
export async function extractCapture(capture: OpenedCapture, dir: string, only?: (name: string) => boolean): Promise<Extracted> {
  mkdirSync(dir, { recursive: true, mode: 0o700 })
  const out: Extracted = { files: [] }
  for (const member of capture.members) {
    if (only && !only(member.name)) continue
    const expected = member.name === MANIFEST_MEMBER ? undefined : capture.manifest.files[member.name]?.sha256
    const hash = createHash('sha256')
    const hashing = new Transform({
      transform(chunk: Buffer, _enc, done) {
        hash.update(chunk)
        done(null, chunk)
      },
    })
    const target = join(dir, member.name === DISK_MEMBER ? 'disk.qcow2' : member.name)
    const stages: NodeJS.ReadWriteStream[] = [hashing]
    if (member.name === DISK_MEMBER) stages.push(zlib.createZstdDecompress(), limit(capture.manifest.machine.diskBytes + 256 * 1024 * 1024, capture.path))
    await pipeline(memberStream(capture.path, member), ...(stages as [NodeJS.ReadWriteStream]), createWriteStream(target, { mode: 0o600 }))
    if (expected && hash.digest('hex') !== expected) throw damaged(capture.path, `${member.name} does not match its sha256 in the manifest`)
    if (member.name === STATE_MEMBER) out.state = target
    if (member.name === DISK_MEMBER) out.disk = target
    out.files.push(target)
  }
  return out
}

function limit(bytes: number, path: string): Transform {
  let seen = 0
  return new Transform({
    transform(chunk: Buffer, _enc, done) {
      seen += chunk.length
      if (seen > bytes) return done(damaged(path, `its disk decompresses to more than ${bytes} bytes`))
      done(null, chunk)
    },
  })
}

/** Point the extracted disk at the local copy of the mixtape's image (checked before QEMU opens it: guest-start). */
export async function rebaseDisk(disk: string, image: { path: string; format: 'raw' | 'qcow2' }): Promise<void> {
  const result = await execa('qemu-img', ['rebase', '-q', '-u', '-f', 'qcow2', '-b', image.path, '-F', image.format, disk], { reject: false })
  if (result.exitCode !== 0)
    throw new HarnessError('CAPTURE', `the capture's disk cannot be opened: ${result.stderr.trim()}`, { fix: 'the capture is damaged: download it again' })
}
