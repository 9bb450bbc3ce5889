import { spawn } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { join, resolve } from 'node:path'
import type { CaptureManifest } from '../capture/manifest.js'
import { extractCapture, openCapture, rebaseDisk, restoreRefusal } from '../capture/open.js'
import { type BootPlan, planBoot } from '../config/plan.js'
import { findMixtapeByDigest } from '../capture/mixtape-digest.js'
import { HarnessError } from '../errors.js'
import { log } from '../log.js'
import { Sandbox } from '../sandbox/sandbox.js'
import { defaultRuntimeDir, ensureRuntimeDir } from '../vmm/vm-dir.js'
import { poolContextOf, type PoolCaptureContext, viewSources } from '../capture/reopen.js'
import { remoteCommand } from './kept.js'
import { remountView, rerunFile, testUserCommand } from './rerun.js'

export interface DebugArgs {
  capture: string | undefined
  exec: string | undefined
  keep: boolean
  extract: string | undefined
  /** Run the failing file again under Vitest in the VM (a pool capture). */
  rerun?: boolean
  /** With rerun: the inspector waits for a debugger (`--inspect-brk`). */
  inspectBrk?: boolean
  /** With rerun: the host port the guest's inspector is forwarded to (default 9229). */
  inspectPort?: number
  /** The local checkout laid where the view was (default: the working directory). */
  checkout?: string
}

/**
 * `debug <capture>`: restore a captured VM in a fresh VM dir of this host (the mixtape found by
 * digest in the local store), start a new agent and SSH key in it, then a shell, or `--exec CMD`
 * (exit status: CMD's); `--keep` leaves it running for `stereos-harness ssh`. A capture the Vitest
 * pool took gets the local checkout (`--checkout`, default the working directory) where the
 * project view was, under the VM's own writes, and the shell runs as the test user in Vitest's
 * root; `--rerun` runs the failing file there again under Vitest (rerun.ts). Other captures
 * get a shell as admin. `--extract DIR` writes the manifest, logs and disk to DIR instead.
 */
export async function debugCommand(args: DebugArgs): Promise<number> {
  if (!args.capture)
    throw new HarnessError('INVALID_OPTIONS', 'debug needs the path of a capture', { fix: 'stereos-harness debug <capture> [--exec CMD] [--keep]' })
  const path = resolve(args.capture)
  const capture = openCapture(path)
  const { manifest } = capture
  if (args.extract) {
    const dir = resolve(args.extract)
    const out = await extractCapture(capture, dir)
    process.stdout.write(`extracted ${out.files.length} files of ${path} to ${dir}\n`)
    if (out.disk)
      process.stdout.write(
        `  disk: ${out.disk} (a qcow2 over ${manifest.mixtape.ref}'s ${manifest.mixtape.disk.file}, sha256:${manifest.mixtape.disk.sha256})\n`,
      )
    return 0
  }
  const refusal = restoreRefusal(capture)
  if (refusal) throw new HarnessError('CAPTURE', refusal, { fix: `its logs and disk: stereos-harness debug ${args.capture} --extract DIR` })
  const pool = poolContextOf(manifest.context)
  if (args.rerun && args.exec !== undefined) throw new HarnessError('INVALID_OPTIONS', 'debug takes --rerun or --exec, not both')
  if (args.rerun && !pool)
    throw new HarnessError('INVALID_OPTIONS', `${path} was not taken by the Vitest pool, so it names no test file to rerun`, {
      fix: 'use --exec CMD or the shell',
    })
  const sources = pool ? viewSources(pool, resolve(args.checkout ?? '.')) : []
  for (const source of sources) if (!source.local) process.stderr.write(`the view's ${source.root} is served empty: ${source.why}\n`)

  const runtimeDir = defaultRuntimeDir()
  const captures = join(runtimeDir, 'captures')
  ensureRuntimeDir(runtimeDir)
  mkdirSync(captures, { recursive: true, mode: 0o700 })
  const work = mkdtempSync(join(captures, 'debug-'))
  let sandbox: Sandbox
  try {
    const mixtape = await findMixtapeByDigest({ ref: manifest.mixtape.ref, disk: manifest.mixtape.disk, pull: manifest.mixtape.pull }, manifest.arch, log)
    const extracted = await extractCapture(capture, work, (name) => name !== 'serial.log' && name !== 'qemu.log')
    if (!extracted.state || !extracted.disk) throw new HarnessError('CAPTURE', `${path} lacks its state or disk`)
    await rebaseDisk(extracted.disk, mixtape.disk)
    // A view root of a pool capture is served from the local checkout; other shares come back empty
    // (their devices are part of the saved machine).
    const shared = manifest.shares.map((share) => {
      const local = sources.find((s) => s.tag === share.tag)?.local
      if (local) return { host: local, guest: share.guest, readonly: true }
      const host = join(work, share.tag)
      mkdirSync(host, { mode: 0o700 })
      return { host, guest: share.guest, readonly: share.readonly }
    })
    sandbox = await Sandbox.boot(restorePlan(manifest, { mixtape: mixtape.dir, shared, runtimeDir, keep: args.keep }), {
      restore: { state: extracted.state, disk: extracted.disk, label: `capture:${manifest.created}` },
    }).catch((err: unknown) => {
      throw new HarnessError('CAPTURE', `${path} could not be restored (taken with ${manifest.machine.qemu}): ${(err as Error).message.split('\n')[0]}`, {
        fix: 'a capture restores with the QEMU it was taken with; take its logs and disk with --extract DIR',
        cause: err,
      })
    })
  } finally {
    // The disk now lives in the VM dir; the state was read at load.
    rmSync(work, { recursive: true, force: true })
  }
  const ssh = sandbox.ssh
  if (!ssh) {
    await sandbox.shutdown()
    throw new HarnessError('CAPTURE', 'the restored VM has no SSH path', { fix: 'captures of VMs without a network cannot be entered yet' })
  }
  try {
    if (pool) await remountView(sandbox, pool)
    const what = pool
      ? ` (${pool.file}: ${pool.failedTests.join(', ') || 'failed'})`
      : Object.keys(manifest.context).length
        ? ` (${JSON.stringify(manifest.context)})`
        : ''
    process.stderr.write(`restored ${path}${what} as ${sandbox.info.id}\n`)
    const code =
      pool && args.rerun
        ? await rerunFile(sandbox, pool, { brk: args.inspectBrk ?? false, port: args.inspectPort ?? 9229 })
        : await shell(ssh.args, args.exec, pool)
    if (args.keep) {
      sandbox.detach(`stereos-harness debug ${path}`)
      process.stderr.write(
        `kept ${sandbox.info.id}: enter it with \`stereos-harness ssh ${sandbox.info.id}\`, stop it with \`stereos-harness stop ${sandbox.info.id}\`\n`,
      )
      return code
    }
    await sandbox.shutdown()
    return code
  } catch (err) {
    if (!args.keep) await sandbox.shutdown().catch(() => undefined)
    throw err
  }
}

/** ssh into the VM: a shell, or CMD; as the test user in Vitest's root for a pool capture, else as admin. */
async function shell(sshArgs: string[], exec: string | undefined, pool: PoolCaptureContext | undefined): Promise<number> {
  const interactive = exec === undefined
  const tty = interactive && process.stdin.isTTY ? ['-t'] : []
  const command = pool ? testUserCommand(pool, exec) : interactive ? undefined : ['sh', '-c', exec ?? '']
  const child = spawn('ssh', [...tty, ...sshArgs, ...(command ? [remoteCommand(command)] : [])], { stdio: 'inherit' })
  return new Promise<number>((done, fail) => {
    child.on('error', (err) => fail(new HarnessError('HOST', `cannot run ssh: ${err.message}`, { fix: 'install an OpenSSH client' })))
    child.on('exit', (status, signal) => done(status ?? (signal ? 128 : 1)))
  })
}

/**
 * The captured machine as a boot plan: the same arch, accelerator, resources, devices and
 * network, the mixtape found here, and a new agent started over SSH (the captured one was killed,
 * as template clones get theirs).
 */
function restorePlan(
  manifest: CaptureManifest,
  here: { mixtape: string; shared: { host: string; guest: string; readonly: boolean }[]; runtimeDir: string; keep: boolean },
): BootPlan {
  return planBoot(
    {
      mixtape: here.mixtape,
      arch: manifest.arch,
      accel: manifest.accel,
      resources: { cpus: manifest.machine.cpus, memory: manifest.machine.memoryMiB * 1024 * 1024, disk: manifest.machine.diskBytes },
      network: { mode: manifest.vm.network },
      controlPlane: manifest.vm.controlPlane === 'vsock' ? 'vsock' : 'tcp',
      bootstrap: 'ssh',
      // The share image disk is attached exactly when the captured VM had it.
      template: manifest.vm.shareImage ? 'auto' : 'off',
      shared: here.shared,
      runtimeDir: here.runtimeDir,
      detachable: here.keep,
    },
    "the capture's machine",
  )
}
