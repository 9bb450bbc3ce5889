import { renameSync, rmSync } from 'node:fs'
import { execa } from 'execa'
import type { StereosdClient } from '../control/client.js'
import { waitReady } from '../control/ready.js'
import type { Transport } from '../control/transport.js'
import { firstLine, HarnessError } from '../errors.js'
import { which } from '../host/which.js'
import { debug, type LogSink } from '../log.js'
import type { Mixtape } from '../mixtape/mixtape.js'
import { templateKey, type TemplateKey } from '../template/key.js'
import { incomingArgs, resumeRestored, saveState } from '../template/migration.js'
import { waitGuestIdle } from '../template/settle.js'
import { lockTemplate, markUsed, readTemplate, removeTemplate, stageTemplate, templateDefect, templatesRoot, type StoredTemplate } from '../template/store.js'
import { createLeaseDisk, createOverlay, templateDiskDefect } from '../vmm/disk.js'
import { listenHostPorts } from '../vmm/network/host-ports.js'
import { attachNetns } from '../vmm/network/netns-attach.js'
import { accompany, bootTimeoutError, killQemu, startQemu, type QemuLaunch, type RunningQemu } from './qemu-start.js'
import type { BootPhases } from './phases.js'

/**
 * QEMU running and stereosd ready: from a template when there is one for this kind of VM (a
 * restore takes a second where a cold boot takes ten), else by a cold boot, which then saves
 * the template for the next lease. A template is saved at stereosd ready, before provisioning:
 * no secret, token, SSH key, jcard or 9p mount is in it, and no test has run in it.
 */
export interface GuestStart {
  launch: QemuLaunch
  mixtape: Mixtape
  diskBytes: number
  control: Transport
  bootTimeoutMs: number
  template: 'auto' | 'off'
  log: LogSink
  /** The boot's phases: 'template-save', 'disk', 'qemu', 'resume' and 'stereosd' run here. */
  phases: BootPhases
  /**
   * Run in a template build once stereosd is ready, before the save: starts the guest agent in
   * the guest to be saved. A failure is logged, and the template holds no agent.
   */
  prepareTemplate?: (client: StereosdClient, qemu: RunningQemu) => Promise<void>
  /** Restore this saved guest instead (`stereos-harness debug`): no template, no cold boot. */
  restore?: CapturedGuest
}

/** A capture's guest, extracted: its migration stream and its disk, a qcow2 over the mixtape's image. */
export interface CapturedGuest {
  state: string
  disk: string
  /** Names the capture in info.template.id. */
  label: string
}

/** The template a VM was restored from: `built` when this boot saved it; `agent` when its agent was already running. */
export interface TemplateUse {
  id: string
  built: boolean
  agent: boolean
}

export interface StartedGuest {
  qemu: RunningQemu
  client: StereosdClient
  template: TemplateUse | undefined
}

const trace = debug('stereos:boot')

/** Saving a ~1 GiB guest under TCG takes a few seconds; a stuck save must not hold the lock long. */
const SAVE_TIMEOUT_MS = 120_000
/** Loading a saved state takes 0.2–9 s under TCG (1 to 8 parallel restores, MACHINE-FACTS). */
const LOAD_TIMEOUT_MS = 60_000

export async function startGuest(start: GuestStart): Promise<StartedGuest> {
  if (start.restore) return restoreCaptured(start, start.restore)
  const key = start.template === 'auto' ? templateKeyFor(start) : undefined
  if (!key) return { ...(await coldBoot(start)), template: undefined }
  const root = templatesRoot()

  let stored = readTemplate(root, key.id)
  let built = false
  if (!stored) {
    const outcome = await start.phases.phase('template-save', () => buildTemplate(start, key, root))
    // The save failed: the lease boots cold.
    if (!outcome) return { ...(await coldBoot(start)), template: undefined }
    stored = outcome.stored
    built = outcome.built
  }
  try {
    const restored = await restore(start, stored, root)
    return { ...restored, template: { id: key.id, built, agent: stored.meta.agent } }
  } catch (err) {
    if (!(err instanceof RestoreError)) throw err
    start.log(`VM template ${key.id} could not be restored (${firstLine(err.cause)}); it is removed, and this VM boots cold`)
    const release = await lockTemplate(root, key.id, 'exclusive')
    try {
      if (readTemplate(root, key.id)?.meta.created === stored.meta.created) removeTemplate(root, key.id)
    } catch (removal) {
      // Not ours to remove (another user's files in a shared cache): it stays, and is refused again.
      start.log(`VM template ${key.id} could not be removed (${firstLine(removal)}); it is left in ${stored.paths.dir}`)
    } finally {
      await release()
    }
    return { ...(await coldBoot(start)), template: undefined }
  }
}

let saidNoZstd = false

/** The key, or undefined when templates cannot work here (said once per process). */
function templateKeyFor(start: GuestStart): TemplateKey | undefined {
  if (!which('zstd')) {
    if (!saidNoZstd) start.log('zstd is not installed: VMs boot cold, without templates (apt-get install zstd)')
    saidNoZstd = true
    return undefined
  }
  return templateKey({ spec: start.launch.spec, qemuBinary: start.launch.binary, mixtape: start.mixtape, diskBytes: start.diskBytes })
}

/** One QEMU for this VM, joined to its network namespace's forwards and egress and to its declared host ports. */
async function launch(start: GuestStart, disk: string, extraArgs: string[] = []): Promise<RunningQemu> {
  const l = start.launch
  // Listening before QEMU starts: the guest's first connection finds the socket there.
  const hostPorts = l.hostPorts.length ? await listenHostPorts(l.hostPorts) : undefined
  let qemu: RunningQemu
  try {
    qemu = startQemu({ ...l, spec: { ...l.spec, disk: { ...l.spec.disk, path: disk } } }, extraArgs)
  } catch (err) {
    hostPorts?.stop()
    throw err
  }
  if (hostPorts) accompany(qemu, hostPorts)
  if (l.netns) {
    try {
      accompany(qemu, await attachNetns(l.netns, qemu.process.pid, start.log))
    } catch (err) {
      await killQemu(qemu)
      throw err
    }
  }
  return qemu
}

/** The 'stereosd' phase: the guest's control plane ready, its connection closed if the boot fails later. */
function stereosdPhase(start: GuestStart, qemu: RunningQemu): Promise<StereosdClient> {
  return start.phases.phase(
    'stereosd',
    async (undo) => {
      const client = await awaitStereosd(start, qemu)
      undo(() => client.close())
      return client
    },
    'stereosd-ready',
  )
}

/** The 'qemu' phase: QEMU started on `disk` (loading a saved state with `incoming`), killed if the boot fails later. */
function qemuPhase(start: GuestStart, disk: string, incoming?: string): Promise<RunningQemu> {
  return start.phases.phase(
    'qemu',
    async (undo) => {
      const qemu = await launch(start, disk, incoming ? incomingArgs(incoming) : [])
      undo(() => killQemu(qemu))
      return qemu
    },
    'qemu-started',
  )
}

/** The 'resume' phase of a restore: the saved state loaded and the guest running. */
function resumePhase(start: GuestStart, qemu: RunningQemu): Promise<void> {
  // Loading is local work with its own bound: bootTimeoutMs is for the guest, and a tiny one
  // must not make a good template look broken.
  return start.phases.phase('resume', async () => resumeRestored(await qemu.qmp, qemu.died, LOAD_TIMEOUT_MS), 'restored')
}

/** The first answered get_health that says ready; aborted the moment QEMU exits. */
async function awaitStereosd(start: GuestStart, qemu: RunningQemu): Promise<StereosdClient> {
  const { bootTimeoutMs: timeoutMs, launch: l } = start
  try {
    const ready = await waitReady(start.control, { deadline: Date.now() + timeoutMs, signal: qemu.died })
    return ready.client
  } catch (err) {
    throw bootTimeoutError(err, timeoutMs, l.vm)
  }
}

async function coldBoot(start: GuestStart): Promise<Omit<StartedGuest, 'template'>> {
  const disk = start.launch.spec.disk.path
  await start.phases.phase('disk', () => createOverlay(start.mixtape.disk, disk, start.diskBytes), 'disk-ready')
  const qemu = await qemuPhase(start, disk)
  const client = await stereosdPhase(start, qemu)
  return { qemu, client }
}

/**
 * Build the template for `key` unless another boot (in any process) has meanwhile (then
 * `built` is false): a cold boot
 * on the template's own disk, stereosd ready, then the guest paused and saved. Boot failures
 * are this lease's (thrown); a failed save is logged and returns undefined.
 */
async function buildTemplate(start: GuestStart, key: TemplateKey, root: string): Promise<{ stored: StoredTemplate; built: boolean } | undefined> {
  const { log } = start
  const release = await lockTemplate(root, key.id, 'exclusive', () => log(`waiting for another boot to save VM template ${key.id}`))
  try {
    const existing = readTemplate(root, key.id)
    if (existing) return { stored: existing, built: false }
    const staging = stageTemplate(root, key)
    try {
      await createOverlay(start.mixtape.disk, staging.paths.disk, start.diskBytes)
      const qemu = await launch(start, staging.paths.disk)
      let saveMs: number
      let agent = false
      try {
        let client: StereosdClient
        try {
          client = await awaitStereosd(start, qemu)
        } catch (err) {
          // This lease's boot failed: its disk goes where a cold boot's would be, for the VM
          // dir's rollback to keep (keepOnFailure) or remove.
          await killQemu(qemu)
          renameSync(staging.paths.disk, start.launch.spec.disk.path)
          throw err
        }
        agent = await prepare(start, key, client, qemu)
        // No connection of ours may be in the saved state: each restore would inherit it.
        client.close()
        // As late as possible: once the guest has finished starting its services.
        const settled = await waitGuestIdle(qemu.process.pid)
        trace(`template ${key.id}: guest ${settled.idle ? 'idle' : 'still busy'} after ${settled.waitedMs} ms past stereosd ready`)
        const began = performance.now()
        try {
          await saveState(await qemu.qmp, staging.paths.state, SAVE_TIMEOUT_MS)
          await checkStream(staging.paths.state)
        } catch (err) {
          log(`could not save a VM template (${firstLine(err)}); this VM boots cold`)
          return undefined
        }
        saveMs = Math.round(performance.now() - began)
      } finally {
        await killQemu(qemu)
      }
      const stored = staging.commit(saveMs, agent)
      log(
        `saved VM template ${key.id} (${key.describe.arch}, ${key.describe.accel}, ${key.describe.memoryMiB} MiB) in ${saveMs} ms: later VMs of this kind restore it`,
      )
      return { stored, built: true }
    } finally {
      staging.discard()
    }
  } finally {
    await release()
  }
}

/** The template build's preparation (the agent started in it); a failure leaves a template without an agent. */
async function prepare(start: GuestStart, key: TemplateKey, client: StereosdClient, qemu: RunningQemu): Promise<boolean> {
  if (!start.prepareTemplate) return false
  try {
    await start.prepareTemplate(client, qemu)
    return true
  } catch (err) {
    if (qemu.died.aborted) throw err
    start.log(`could not start the guest agent in VM template ${key.id} (${firstLine(err)}); leases start their own`)
    return false
  }
}

/** zstd writes the stream after QEMU says "completed": a truncated or damaged file is never committed. */
async function checkStream(state: string): Promise<void> {
  const result = await execa('zstd', ['-q', '-t', state], { reject: false, timeout: 60_000 })
  if (result.exitCode !== 0)
    throw new HarnessError('TEMPLATE', `the saved state ${state} does not verify: ${`${result.stderr}`.trim() || `exit ${result.exitCode}`}`)
}

/** A restore that failed in loading the template, as opposed to the guest failing afterwards. */
class RestoreError extends Error {
  constructor(override readonly cause: unknown) {
    super(`restore failed: ${firstLine(cause)}`)
  }
}

async function restore(start: GuestStart, stored: StoredTemplate, root: string): Promise<Omit<StartedGuest, 'template'>> {
  const { phases, launch: l } = start
  const disk = l.spec.disk.path
  // Shared: a prune waits until QEMU has the template's files open.
  const release = await lockTemplate(root, stored.paths.id, 'shared')
  let qemu: RunningQemu | undefined
  try {
    if (!readTemplate(root, stored.paths.id)) throw new Error('the template was removed')
    // A templates dir may be shared or restored from a cache: checked as a mixtape is.
    const defect = await templateDefect(root, stored, start.mixtape.disk)
    if (defect) throw new Error(`it is refused: ${defect}`)
    await phases.phase('disk', () => createLeaseDisk(stored.paths.disk, disk), 'disk-ready')
    // A failed restore undoes itself here (and the VM boots cold): QEMU goes on the boot's stack
    // only once the restore has worked.
    qemu = await phases.phase('qemu', () => launch(start, disk, incomingArgs(stored.paths.state)), 'qemu-started')
    await resumePhase(start, qemu)
    markUsed(stored)
  } catch (err) {
    if (qemu) await killQemu(qemu)
    rmSync(disk, { force: true })
    throw new RestoreError(err)
  } finally {
    await release()
  }
  const running = qemu
  phases.undo('qemu', () => killQemu(running))
  return { qemu: running, client: await stereosdPhase(start, running) }
}

/**
 * A captured guest, restored as a template is: its disk (checked like a template's: a qcow2 over
 * exactly the mixtape's image) becomes this VM's disk, and QEMU loads the saved state. The
 * result counts as a restore (`agent: false`), so the clock is refreshed and an agent started.
 */
async function restoreCaptured(start: GuestStart, captured: CapturedGuest): Promise<StartedGuest> {
  const disk = start.launch.spec.disk.path
  await start.phases.phase(
    'disk',
    async () => {
      const defect = await templateDiskDefect(captured.disk, start.mixtape.disk)
      if (defect)
        throw new HarnessError('CAPTURE', `the capture's disk is refused: ${defect}`, { fix: 'the capture is damaged or was altered: use the original file' })
      renameSync(captured.disk, disk)
    },
    'disk-ready',
  )
  const qemu = await qemuPhase(start, disk, captured.state)
  await resumePhase(start, qemu)
  const client = await stereosdPhase(start, qemu)
  return { qemu, client, template: { id: captured.label, built: false, agent: false } }
}
