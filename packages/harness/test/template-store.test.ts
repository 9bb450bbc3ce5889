import { chmodSync, mkdirSync, mkdtempSync, readdirSync, renameSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, test } from 'vitest'
import type { Mixtape } from '../src/mixtape/mixtape.js'
import { machineArgv, templateKey } from '../src/template/key.js'
import { incomingArgs, saveUri } from '../src/template/migration.js'
import {
  isStale,
  listTemplates,
  lockTemplate,
  markUsed,
  pruneTemplates,
  readTemplate,
  stageTemplate,
  strayEntries,
  templateFilesDefect,
} from '../src/template/store.js'
import { qemuSpec } from './support/qemu-spec.js'

const dirs: string[] = []
afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true })
})
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'sh-templates-'))
  dirs.push(dir)
  return dir
}

/** A mixtape of four small files (only their identity matters to the key). */
function mixtape(): Mixtape {
  const dir = tempDir()
  for (const name of ['stereos.img', 'bzImage', 'initrd', 'cmdline']) writeFileSync(join(dir, name), name)
  return {
    ref: 'fixture',
    dir,
    arch: 'x86_64',
    version: undefined,
    disk: { path: join(dir, 'stereos.img'), format: 'raw' },
    kernel: { kernel: join(dir, 'bzImage'), initrd: join(dir, 'initrd'), cmdline: join(dir, 'cmdline') },
  }
}

// /bin/true answers `--version` with its own banner: a stand-in QEMU for the key's version field.
const key = (m: Mixtape, overrides: Parameters<typeof qemuSpec>[0] = {}, diskBytes = 4 * 1024 ** 3) =>
  templateKey({ spec: qemuSpec(overrides), qemuBinary: '/bin/true', mixtape: m, diskBytes })

describe('template key', () => {
  test('per-VM values (paths, forwarded ports, vsock CID, share host dirs) do not change it', () => {
    const m = mixtape()
    const a = key(m, { shares: [{ tag: 'share0', host: '/home/a/project', readonly: true }], vsock: { cid: 3, vhostfd: 3 } })
    const b = key(m, {
      disk: { path: '/other/vm/disk.qcow2', format: 'qcow2' },
      qmpSocket: '/other/vm/qmp.sock',
      serialLog: '/other/vm/serial.log',
      pidfile: '/other/vm/qemu.pid',
      network: {
        mode: 'user',
        restrict: false,
        forwards: [
          { host: 3333, guest: 22, proto: 'tcp' },
          { host: 5555, guest: 1024, proto: 'tcp' },
          { host: 9090, guest: 80, proto: 'tcp' },
        ],
      },
      shares: [{ tag: 'share0', host: '/home/b/elsewhere', readonly: true }],
      vsock: { cid: 917, vhostfd: 3 },
    })
    expect(b.id).toBe(a.id)
    // The share image: another user's cache, same version.
    const image = (dir: string) => key(m, { imageDisk: { path: `${dir}/share/x86_64-aaaa.ext4`, serial: 'stereos-harness' } }).id
    expect(image('/home/a/.cache')).toBe(image('/home/b/.cache'))
    expect(a.id).toMatch(/^[0-9a-f]{24}$/)
    expect(machineArgv(qemuSpec()).join(' ')).not.toMatch(/\/vm\/|2222|4444/)
  })

  test('the machine, the guest and the disk do: memory, vCPUs, CPU model, accel, arch, network shape, shares, disk size, mixtape files', () => {
    const m = mixtape()
    const base = key(m).id
    const variants = [
      key(m, { memoryMiB: 1024 }),
      key(m, { cpus: 4 }),
      key(m, { accel: 'kvm' }),
      key(m, { profile: { ...qemuSpec().profile, arch: 'aarch64', machine: 'virt,highmem=on', cpu: { kvm: 'host', tcg: 'max,pauth=off' } } }),
      key(m, { network: { mode: 'none' } }),
      key(m, { network: { mode: 'user', restrict: true, forwards: [] } }),
      key(m, { shares: [{ tag: 'share0', host: '/p', readonly: true }] }),
      key(m, { shares: [{ tag: 'stereos-harness', host: '/cache/share/x86_64-aaaa', readonly: true }] }),
      key(m, {}, 8 * 1024 ** 3),
      // The agent disk, and its version.
      key(m, { imageDisk: { path: '/cache/share/x86_64-aaaa.ext4', serial: 'stereos-harness' } }),
      key(m, { imageDisk: { path: '/cache/share/x86_64-bbbb.ext4', serial: 'stereos-harness' } }),
    ].map((k) => k.id)
    expect([base, ...variants].filter((id, i, all) => all.indexOf(id) !== i)).toEqual([])
    // A new harness share version (its dir name) is a new template.
    expect(key(m, { shares: [{ tag: 'stereos-harness', host: '/cache/share/x86_64-bbbb', readonly: true }] }).id).not.toBe(variants[7])
    // A rebuilt or re-pulled mixtape: same path, new contents.
    writeFileSync(m.disk.path, 'rebuilt image')
    expect(key(m).id).not.toBe(base)
  })

  test('migration URIs quote the state path for the shell QEMU runs them with', () => {
    expect(saveUri("/c/it's here/state.zst")).toBe(`exec:zstd -q -1 -T0 -o '/c/it'\\''s here/state.zst'`)
    expect(incomingArgs('/c/a b/state.zst')).toEqual(['-incoming', "exec:zstd -q -dc '/c/a b/state.zst'"])
  })
})

describe('template store', () => {
  test('a staged build is invisible until committed; commit writes template.json last and renames it into place', () => {
    const root = tempDir()
    const k = key(mixtape())
    chmodSync(root, 0o755) // made by someone else, readable by all
    const staging = stageTemplate(root, k)
    expect(statSync(root).mode & 0o777).toBe(0o700)
    writeFileSync(staging.paths.state, 'state')
    writeFileSync(staging.paths.disk, 'disk')
    expect(readTemplate(root, k.id)).toBeUndefined()
    expect(listTemplates(root)).toEqual([])
    const stored = staging.commit(1234, true)
    expect(stored.paths.dir).toBe(join(root, k.id))
    expect(readTemplate(root, k.id)?.meta).toMatchObject({ id: k.id, saveMs: 1234, agent: true, describe: { memoryMiB: 512, cpus: 2 } })
    expect(listTemplates(root).map((t) => t.paths.id)).toEqual([k.id])
    expect(readdirSync(root).filter((name) => name.startsWith('.staging-'))).toEqual([])
  })

  test('a directory without template.json, or with a damaged one, is not a template', () => {
    const root = tempDir()
    const id = 'a'.repeat(24)
    mkdirSync(join(root, id), { recursive: true })
    writeFileSync(join(root, id, 'state.zst'), 'x')
    writeFileSync(join(root, id, 'disk.qcow2'), 'x')
    expect(readTemplate(root, id)).toBeUndefined()
    writeFileSync(join(root, id, 'template.json'), '{"format": 1, "id": "not this one"}')
    expect(readTemplate(root, id)).toBeUndefined()
    expect(strayEntries(root)).toEqual([join(root, id)])
  })

  test('prune removes dead saves and stale templates, keeps current ones; --templates removes all', async () => {
    const root = tempDir()
    const fresh = mixtape()
    const changing = mixtape()
    const current = key(fresh)
    const stale = key(changing, { memoryMiB: 1024 })
    for (const k of [current, stale]) {
      const staging = stageTemplate(root, k)
      writeFileSync(staging.paths.state, 'state')
      writeFileSync(staging.paths.disk, 'disk')
      staging.commit(1, false)
    }
    // A build that died: its staging dir stays behind (no process holds its lock).
    const dead = stageTemplate(root, key(fresh, { cpus: 8 }))
    // The mixtape behind `stale` was rebuilt since.
    utimesSync(changing.disk.path, new Date(), new Date(Date.now() + 60_000))
    expect(listTemplates(root).map((t) => [t.paths.id, isStale(t)])).toEqual(
      expect.arrayContaining([
        [current.id, false],
        [stale.id, true],
      ]),
    )
    const report = await pruneTemplates(root, 'stale')
    expect(report.removed).toEqual([stale.id])
    expect(report.staging).toEqual([dead.paths.dir])
    expect(listTemplates(root).map((t) => t.paths.id)).toEqual([current.id])
    expect((await pruneTemplates(root, 'all')).removed).toEqual([current.id])
    expect(listTemplates(root)).toEqual([])
  })

  test('prune --unused-since removes the templates no boot saved or restored since then, and keeps the rest', async () => {
    const root = tempDir()
    const m = mixtape()
    const [used, idle] = [key(m), key(m, { memoryMiB: 2048 })]
    for (const k of [used, idle]) {
      const staging = stageTemplate(root, k)
      writeFileSync(staging.paths.state, 'state')
      writeFileSync(staging.paths.disk, 'disk')
      staging.commit(1, true)
    }
    // Both saved an hour ago, as in an earlier CI run whose cache this run restored.
    const hourAgo = new Date(Date.now() - 3_600_000)
    for (const k of [used, idle]) utimesSync(join(root, k.id, 'template.json'), hourAgo, hourAgo)
    const runStarted = Date.now() - 60_000
    markUsed(readTemplate(root, used.id)!)
    expect(readTemplate(root, used.id)!.lastUsedMs).toBeGreaterThan(runStarted)
    const report = await pruneTemplates(root, { unusedBeforeMs: runStarted })
    expect(report.removed).toEqual([idle.id])
    expect(listTemplates(root).map((t) => t.paths.id)).toEqual([used.id])
  })

  test('prune waits for a restore in progress (a shared lock) before removing its template', async () => {
    const root = tempDir()
    const k = key(mixtape())
    const staging = stageTemplate(root, k)
    writeFileSync(staging.paths.state, 'state')
    writeFileSync(staging.paths.disk, 'disk')
    staging.commit(1, false)
    const restoring = await lockTemplate(root, k.id, 'shared')
    let pruned = false
    const prune = pruneTemplates(root, 'all').then((r) => {
      pruned = true
      return r
    })
    await new Promise((resolve) => setTimeout(resolve, 300))
    expect(pruned).toBe(false)
    expect(readTemplate(root, k.id)).toBeDefined()
    await restoring()
    expect((await prune).removed).toEqual([k.id])
  })
})

describe('templates from a shared or restored cache are checked before loading (#19 bounds)', () => {
  /** A committed template whose files were made world-writable, as a loose umask could leave them. */
  function committed(): { root: string; stored: ReturnType<ReturnType<typeof stageTemplate>['commit']> } {
    const root = tempDir()
    const staging = stageTemplate(root, key(mixtape()))
    writeFileSync(staging.paths.state, 'state', { mode: 0o666 })
    writeFileSync(staging.paths.disk, 'disk', { mode: 0o666 })
    chmodSync(staging.paths.state, 0o666)
    chmodSync(staging.paths.disk, 0o666)
    return { root, stored: staging.commit(1, false) }
  }

  test('a template this user saved passes: commit makes its files 0600 whatever the umask made them', () => {
    const { root, stored } = committed()
    expect(statSync(stored.paths.state).mode & 0o777).toBe(0o600)
    expect(statSync(stored.paths.disk).mode & 0o777).toBe(0o600)
    expect(templateFilesDefect(root, stored)).toBeUndefined()
  })

  test('files of another uid are refused', () => {
    const { root, stored } = committed()
    const uid = process.getuid?.() ?? 0
    expect(templateFilesDefect(root, stored, uid + 1)).toBe(`${root} belongs to uid ${uid}, not this user (${uid + 1})`)
  })

  test('a template dir others can enter or write, or a file others can write, is refused', () => {
    const { root, stored } = committed()
    chmodSync(stored.paths.dir, 0o755)
    expect(templateFilesDefect(root, stored)).toBe(`${stored.paths.dir} has mode 0755, not 0700`)
    chmodSync(stored.paths.dir, 0o700)
    chmodSync(stored.paths.state, 0o620)
    expect(templateFilesDefect(root, stored)).toBe(`${stored.paths.state} is writable by others (mode 0620)`)
  })

  test('a link in place of a file, or of the template dir, is refused', () => {
    const { root, stored } = committed()
    const elsewhere = join(tempDir(), 'disk.qcow2')
    writeFileSync(elsewhere, 'disk', { mode: 0o600 })
    rmSync(stored.paths.disk)
    symlinkSync(elsewhere, stored.paths.disk)
    expect(templateFilesDefect(root, stored)).toBe(`${stored.paths.disk} is a symbolic link`)
    const moved = join(tempDir(), 'moved')
    renameSync(stored.paths.dir, moved)
    symlinkSync(moved, stored.paths.dir)
    expect(templateFilesDefect(root, stored)).toBe(`${stored.paths.dir} is a symbolic link`)
  })

  test('a directory in place of a file is refused', () => {
    const { root, stored } = committed()
    rmSync(stored.paths.state)
    mkdirSync(stored.paths.state, { mode: 0o700 })
    expect(templateFilesDefect(root, stored)).toBe(`${stored.paths.state} is not a regular file`)
  })
})
