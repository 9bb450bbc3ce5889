import type { BootPlan } from '../config/plan.js'
import { HarnessError } from '../errors.js'
import { readCmdline } from '../mixtape/local.js'
import type { Mixtape } from '../mixtape/mixtape.js'
import { SHARE_TAG } from '../share/harness-share.js'
import type { QemuSpec } from '../vmm/argv.js'
import { buildQemuArgv } from '../vmm/argv.js'
import { watchLogCaps } from '../vmm/log-cap.js'
import { PROFILES, type Accel } from '../vmm/profile.js'
import { spawnQemu, tail, type QemuProcess } from '../vmm/qemu-process.js'
import { connectQmp } from '../vmm/qmp-connect.js'
import type { QmpClient } from '../vmm/qmp.js'
import type { VmPaths } from '../vmm/vm-dir.js'
import type { NetnsLaunch } from '../vmm/network/private-network.js'
import type { HostPortSpec } from '../vmm/network/host-ports.js'

export type KernelBoot = Extract<QemuSpec['boot'], { kind: 'kernel' }>

/** The mixtape's direct-kernel boot, checked before anything is created for the VM. */
export function kernelBoot(mixtape: Mixtape): KernelBoot {
  if (!mixtape.kernel) {
    throw new HarnessError('MIXTAPE_INVALID', `Mixtape ${mixtape.ref} has no kernel artifacts (bzImage, initrd, cmdline) in ${mixtape.dir}`, {
      fix: 'use a mixtape with kernel artifacts; EFI boot of disk-only mixtapes is not supported yet',
    })
  }
  return { kind: 'kernel', kernel: mixtape.kernel.kernel, initrd: mixtape.kernel.initrd, cmdline: readCmdline(mixtape.kernel.cmdline) }
}

/** Everything QEMU's argv is made of, by name. */
export interface QemuInputs {
  options: BootPlan
  accel: Accel
  boot: KernelBoot
  vm: VmPaths
  network: Pick<QemuSpec, 'network' | 'vsock'>
  /** The harness share's host dir, when the guest agent is wanted. */
  agentShare: string | undefined
}

export function qemuSpecFor(inputs: QemuInputs): QemuSpec {
  const { options, vm } = inputs
  return {
    profile: PROFILES[options.arch],
    accel: inputs.accel,
    cpus: options.resources.cpus,
    memoryMiB: options.memoryMiB,
    boot: inputs.boot,
    disk: { path: vm.disk, format: 'qcow2' },
    qmpSocket: vm.qmpSocket,
    serialLog: vm.serialLog,
    pidfile: vm.pidfile,
    ...inputs.network,
    shares: [
      ...options.shared.map((share, i) => ({ tag: `share${i}`, host: share.host, readonly: share.readonly })),
      ...(inputs.agentShare ? [{ tag: SHARE_TAG, host: inputs.agentShare, readonly: true }] : []),
    ],
  }
}

export interface RunningQemu {
  process: QemuProcess
  /** Connected lazily by whoever needs QMP; a failure surfaces there. */
  qmp: Promise<QmpClient>
  /** Aborted, with a QEMU_EXITED error, the moment QEMU exits: waits for the guest stop at once. */
  died: AbortSignal
}

/** How to start this VM's QEMU; every QEMU a boot starts (cold, template build, restore) shares it. */
export interface QemuLaunch {
  binary: string
  spec: QemuSpec
  vm: VmPaths
  /** Our fds QEMU inherits (the vhost-vsock CID reservation). */
  fds: number[]
  netns: NetnsLaunch | undefined
  /** The harness's sockets for the guest's connections to declared host ports (network.hostPorts). */
  hostPorts: HostPortSpec[]
  detachable: boolean
}

/** Start QEMU; `extraArgs` follow the VM's own (a restore's `-incoming`). */
export function startQemu(launch: QemuLaunch, extraArgs: string[] = []): RunningQemu {
  const { binary, spec, vm, fds, netns, detachable } = launch
  const argv = [...buildQemuArgv(spec), ...extraArgs]
  const child = spawnQemu({ binary, argv, qemuLog: vm.qemuLog, fds, detachable, ...(netns ? { netns } : {}) })
  // The guest writes both logs as much as it likes: capped while this QEMU runs.
  const caps = watchLogCaps([vm.serialLog, vm.qemuLog])
  const qmp = connectQmp(vm.qmpSocket, child)
  qmp.catch(() => undefined)
  const died = new AbortController()
  void child.exited.then((exit) => {
    caps.stop()
    died.abort(qemuExitedError(exit.code, exit.signal, vm))
  })
  return { process: child, qmp, died: died.signal }
}

/** What this process runs beside a QEMU for it (its namespace's host forwards and egress). */
export interface QemuCompanion {
  stop(): void
  /** Stop holding this process open; what it runs may end with this process. */
  unref(): void
}

/**
 * Bind `companion` to QEMU's lifetime here: stopped when QEMU exits, and let go with QEMU's
 * process handle, so a detached VM (Sandbox.detach → QemuProcess.unref) leaves nothing of this
 * process's holding it open.
 */
export function accompany(qemu: RunningQemu, companion: QemuCompanion): void {
  void qemu.process.exited.then(() => companion.stop())
  const unref = qemu.process.unref.bind(qemu.process)
  qemu.process.unref = () => {
    unref()
    companion.unref()
  }
}

/** Kill QEMU and wait for it, then drop the QMP connection (rollback of a failed boot). */
export async function killQemu(qemu: RunningQemu): Promise<void> {
  qemu.process.kill('SIGKILL')
  await qemu.process.exited
  await qemu.qmp.then(
    (client) => client.close(),
    () => undefined,
  )
}

function qemuExitedError(code: number | undefined, signal: string | undefined, vm: VmPaths): HarnessError {
  const how = signal ? `was killed by ${signal}` : `exited with code ${code}`
  return new HarnessError('QEMU_EXITED', `QEMU ${how} before the guest was ready. Last lines of ${vm.qemuLog}:\n${tail(vm.qemuLog)}`, {
    fix: `read ${vm.qemuLog} and ${vm.serialLog}; run \`stereos-harness doctor\` to check the host`,
    logs: { qemu: vm.qemuLog, serial: vm.serialLog },
  })
}

/** A stereosd wait that timed out, restated with the console's last lines. */
export function bootTimeoutError(err: unknown, timeoutMs: number, vm: VmPaths): unknown {
  if (err instanceof HarnessError && err.code === 'BOOT_TIMEOUT') {
    return new HarnessError(
      'BOOT_TIMEOUT',
      `The guest did not become ready within ${timeoutMs} ms: ${err.message}. The guest console is in ${vm.serialLog}; its last lines:\n${tail(vm.serialLog)}`,
      {
        fix: `read ${vm.serialLog} for where the boot stopped; raise bootTimeoutMs if the host is slow (TCG)`,
        logs: { qemu: vm.qemuLog, serial: vm.serialLog },
        cause: err,
      },
    )
  }
  return err
}
