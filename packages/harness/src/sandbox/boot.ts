import { existsSync, mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { parseSandboxOptions, type Arch, type ResolvedSandboxOptions } from '../config/options.js'
import { toMiB } from '../config/size.js'
import { HarnessError } from '../errors.js'
import { log as stderrLog } from '../log.js'
import { hostArch } from '../host/arch.js'
import { probeKvm } from '../host/kvm.js'
import { waitReady } from '../control/ready.js'
import { provision } from '../control/provision.js'
import type { LoadVsock } from '../control/vsock-module.js'
import type { MountPayload } from '../control/messages.js'
import { readCmdline } from '../mixtape/local.js'
import type { Mixtape } from '../mixtape/mixtape.js'
import { resolveMixtape } from '../mixtape/resolve.js'
import { buildQemuArgv, type QemuSpec } from '../vmm/argv.js'
import { chooseControlPlane, planeInfo, planeQemuSpec, planeTransport, type ControlPlane } from '../vmm/control-plane.js'
import { createOverlay } from '../vmm/disk.js'
import { freePort } from '../vmm/ports.js'
import { PROFILES, type Accel } from '../vmm/profile.js'
import { requireQemu, spawnQemu, tail, type QemuProcess } from '../vmm/qemu-process.js'
import { connectQmp } from '../vmm/qmp-connect.js'
import type { QmpClient } from '../vmm/qmp.js'
import { createVmDir, defaultRuntimeDir, markKept, sweepOrphans, type VmPaths } from '../vmm/vm-dir.js'
import { defaultJcard } from './jcard.js'
import { Sandbox } from './sandbox.js'
import { writeSshKey } from './ssh-key.js'
import { Timeline } from './timeline.js'
import { ensureHarnessShare, SHARE_TAG } from '../agent-client/share.js'
import type { AgentClient } from '../agent-client/client.js'
import { TcpTransport, type Transport } from '../control/transport.js'
import { VsockTransport } from '../control/vsock-transport.js'
import { loadVsock } from '../control/vsock-module.js'
import { AGENT_PORT } from '../wire/messages.js'
import { agentJcardTable, harnessMount, newAgentToken, tokenSecret, waitForAgent } from './agent-start.js'
import { sshStartAgent } from './ssh-bootstrap.js'

export interface BootHooks {
  /** Where harness log lines go (default: stderr with a `stereos-harness:` prefix). */
  log?: (line: string) => void
  /** The vsock addon package (default: `@stereos/vsock`, imported on first use); tests inject a fake. */
  loadVsock?: LoadVsock
}

const sweptDirs = new Set<string>()
const accelNotes = new Set<string>()

/** Boot a VM and provision it; see Sandbox.boot. */
export async function bootSandbox(input: unknown, hooks: BootHooks = {}): Promise<Sandbox> {
  const log = hooks.log ?? stderrLog
  const timeline = new Timeline()
  const options = parseSandboxOptions(input)
  const arch = options.arch ?? hostArch()
  if (!arch) {
    throw new HarnessError('HOST', `This host's architecture (${process.arch}) has no matching guest architecture`, { fix: "set arch: 'x86_64' or 'aarch64' to emulate one" })
  }
  checkShares(options)
  if (options.network.mode === 'none' && options.controlPlane === 'tcp') {
    throw noNetworkError("controlPlane is 'tcp'")
  }

  const runtimeDir = resolve(options.runtimeDir ?? defaultRuntimeDir())
  mkdirSync(runtimeDir, { recursive: true, mode: 0o700 })
  if (!sweptDirs.has(runtimeDir)) {
    sweptDirs.add(runtimeDir)
    const swept = sweepOrphans(runtimeDir)
    if (swept.removed.length) log(`removed ${swept.removed.length} VM dir(s) left by runners that died (killed QEMU: ${swept.killed.join(', ') || 'none'})`)
  }

  const mixtape = await resolveMixtape(options.mixtape, { arch, log })
  timeline.mark('mixtape-resolved')
  const { accel, note } = await chooseAccel(options, arch, log)

  const binary = options.qemuBinary ?? PROFILES[arch].qemuBinary
  requireQemu(binary)

  // Before QEMU: the share is a QEMU argument (built once per harness version, cached).
  const agentShare = options.bootstrap === 'none' ? undefined : await ensureHarnessShare(arch, { log })
  const plane = await chooseControlPlane(options.controlPlane, { log, ...(hooks.loadVsock ? { load: hooks.loadVsock } : {}) })
  if (options.network.mode === 'none' && plane.kind === 'tcp') throw noNetworkError(plane.reason)

  let vm: VmPaths
  try {
    vm = createVmDir(runtimeDir)
  } catch (err) {
    if (plane.kind === 'vsock') plane.release()
    throw err
  }
  let qemu: QemuProcess | undefined
  let qmp: Promise<QmpClient> | undefined
  try {
    await createOverlay(mixtape.disk, vm.disk, options.resources.disk)
    timeline.mark('disk-ready')
    const sshPort = options.network.mode === 'nat' ? await freePort() : undefined
    const controlPort = plane.kind === 'tcp' ? await freePort() : undefined
    const agentPort = plane.kind === 'tcp' && agentShare ? await freePort() : undefined
    const token = newAgentToken()
    const key = writeSshKey(vm.sshKey, `stereos-${vm.id}`)
    const jcard = (options.jcard ?? defaultJcard(vm.id, options)) + (options.bootstrap === 'agentd' ? agentJcardTable() : '')
    writeFileSync(vm.jcard, jcard)

    const spec = qemuSpec(options, arch, accel, mixtape, vm, sshPort, controlPort, plane, agentShare, agentPort)
    qemu = spawnQemu({ binary, argv: buildQemuArgv(spec), qemuLog: vm.qemuLog, ...(plane.kind === 'vsock' ? { fds: [plane.fd] } : {}) })
    timeline.mark('qemu-started')
    const running = qemu
    // Our copy of the vhost fd lives as long as QEMU does (see VsockPlane.release).
    if (plane.kind === 'vsock') void running.exited.then(() => plane.release())
    const qmpPromise = connectQmp(vm.qmpSocket, running)
    qmpPromise.catch(() => undefined)
    qmp = qmpPromise

    // Event-driven abort: the moment QEMU exits, stop waiting for the guest.
    const died = new AbortController()
    void running.exited.then((exit) => died.abort(qemuExitedError(exit.code, exit.signal, vm)))
    const transport = planeTransport(plane, controlPort)
    const ready = await waitReady(transport, { deadline: Date.now() + options.bootTimeoutMs, signal: died.signal }).catch((err: unknown) => {
      throw bootError(err, options.bootTimeoutMs, vm)
    })
    timeline.mark('stereosd-ready')

    const mounts: MountPayload[] = options.shared.map((share, i) => ({
      tag: `share${i}`,
      guest_path: share.guest,
      fs_type: '9p',
      ...(share.readonly ? { read_only: true } : {}),
    }))
    if (agentShare) mounts.push(harnessMount())
    const secrets = agentShare ? { ...options.secrets, ...tokenSecret(token) } : options.secrets
    await provision(ready.client, { mounts, secrets, sshKey: { user: 'admin', publicKey: key.publicKey }, jcard })
    timeline.mark('provisioned')

    let agent: { client: AgentClient; transport: Transport } | undefined
    if (agentShare) {
      const load = hooks.loadVsock ?? loadVsock
      const agentTransport: Transport = plane.kind === 'vsock' ? new VsockTransport(plane.cid, AGENT_PORT, load) : new TcpTransport('127.0.0.1', agentPort as number)
      const deadline = Date.now() + options.agentTimeoutMs
      const logs = { serial: vm.serialLog, qemu: vm.qemuLog }
      if (options.bootstrap === 'ssh') {
        const ssh: Transport = plane.kind === 'vsock' ? new VsockTransport(plane.cid, 22, load) : new TcpTransport('127.0.0.1', sshPort as number)
        await sshStartAgent({ transport: ssh, user: 'admin', keyPath: key.privateKeyPath }, token, deadline, died.signal)
      }
      const hint =
        options.bootstrap === 'agentd'
          ? "agentd starts the mixtape's `agent` launcher: a stock mixtape has none, boot it with bootstrap: 'ssh'"
          : 'the agent was started over SSH; check that the guest can run the share\'s Node'
      const client = await waitForAgent(agentTransport, token, { deadline, signal: died.signal, hint, logs })
      agent = { client, transport: agentTransport }
      timeline.mark('agent-ready')
    }

    return new Sandbox({
      info: {
        id: vm.id,
        arch,
        accel,
        accelNote: note,
        mixtape: { ref: mixtape.ref, dir: mixtape.dir, version: mixtape.version },
        transport: planeInfo(plane, controlPort),
        ports: { ssh: sshPort, control: controlPort, agent: agentPort },
        vmDir: vm.dir,
        pid: running.pid,
        timeline: timeline.entries,
      },
      logs: { qemu: vm.qemuLog, serial: vm.serialLog },
      ssh: sshPort === undefined ? undefined : { host: '127.0.0.1', port: sshPort, user: 'admin', keyPath: key.privateKeyPath },
      control: ready.client,
      transport,
      agent: agent ? { ...agent, token } : undefined,
      qemu: running,
      qmp: () => qmpPromise,
      keepOnFailure: options.keepOnFailure,
      log,
    })
  } catch (err) {
    // Without a QEMU nobody else holds the CID; with one, its exit releases ours.
    if (!qemu && plane.kind === 'vsock') plane.release()
    await abandon(qemu, qmp, vm, options.keepOnFailure, err)
    throw err
  }
}

function noNetworkError(why: string): HarnessError {
  return new HarnessError('INVALID_OPTIONS', `options.network.mode: 'none' leaves the control plane no path: it needs vsock, and ${why}`, {
    fix: "use network.mode 'nat' (the default), or enable /dev/vhost-vsock on this host (see `stereos-harness doctor`)",
  })
}

/** A failed boot: QEMU is killed, the disk goes (unless kept), the logs stay for the error's reader. */
async function abandon(qemu: QemuProcess | undefined, qmp: Promise<QmpClient> | undefined, vm: VmPaths, keep: boolean, err: unknown): Promise<void> {
  if (qemu) {
    qemu.kill('SIGKILL')
    await qemu.exited
  }
  await qmp?.then((client) => client.close(), () => undefined)
  if (keep) {
    markKept(vm.dir, `boot failed: ${(err as Error).message.split('\n')[0]}`)
  } else {
    rmSync(vm.disk, { force: true })
  }
}

async function chooseAccel(options: ResolvedSandboxOptions, arch: Arch, log: (line: string) => void): Promise<{ accel: Accel; note: string | undefined }> {
  if (options.accel === 'tcg') return { accel: 'tcg', note: 'TCG requested' }
  const kvm = await probeKvm(arch, options.qemuBinary)
  if (kvm.usable) return { accel: 'kvm', note: undefined }
  if (options.accel === 'kvm') {
    throw new HarnessError('HOST', `options.accel is 'kvm' but KVM cannot run this guest: ${kvm.reason}`, { fix: kvm.fix ?? "use accel: 'auto' to fall back to TCG" })
  }
  const note = `KVM unusable (${kvm.reason}); using TCG emulation, which is several times slower`
  if (!accelNotes.has(arch)) {
    accelNotes.add(arch)
    log(note)
  }
  return { accel: 'tcg', note }
}

function checkShares(options: ResolvedSandboxOptions): void {
  options.shared.forEach((share, i) => {
    const host = resolve(share.host)
    if (!existsSync(host) || !statSync(host).isDirectory()) {
      throw new HarnessError('INVALID_OPTIONS', `options.shared.${i}.host: ${host} is not a directory`, { fix: 'create the directory or correct the path' })
    }
    share.host = host
  })
}

function qemuSpec(
  options: ResolvedSandboxOptions,
  arch: Arch,
  accel: Accel,
  mixtape: Mixtape,
  vm: VmPaths,
  sshPort: number | undefined,
  controlPort: number | undefined,
  plane: ControlPlane,
  agentShare: string | undefined,
  agentPort: number | undefined,
): QemuSpec {
  if (!mixtape.kernel) {
    throw new HarnessError('MIXTAPE_INVALID', `Mixtape ${mixtape.ref} has no kernel artifacts (bzImage, initrd, cmdline) in ${mixtape.dir}`, {
      fix: 'use a mixtape with kernel artifacts; EFI boot of disk-only mixtapes is not supported yet',
    })
  }
  return {
    profile: PROFILES[arch],
    accel,
    cpus: options.resources.cpus,
    memoryMiB: toMiB(options.resources.memory),
    boot: { kind: 'kernel', kernel: mixtape.kernel.kernel, initrd: mixtape.kernel.initrd, cmdline: readCmdline(mixtape.kernel.cmdline) },
    disk: { path: vm.disk, format: 'qcow2' },
    qmpSocket: vm.qmpSocket,
    serialLog: vm.serialLog,
    pidfile: vm.pidfile,
    ...planeQemuSpec(plane, sshPort, controlPort, [...options.network.forwards, ...(agentPort === undefined ? [] : [{ host: agentPort, guest: AGENT_PORT, proto: 'tcp' as const }])]),
    shares: [
      ...options.shared.map((share, i) => ({ tag: `share${i}`, host: share.host, readonly: share.readonly })),
      ...(agentShare ? [{ tag: SHARE_TAG, host: agentShare, readonly: true }] : []),
    ],
  }
}

function qemuExitedError(code: number | undefined, signal: string | undefined, vm: VmPaths): HarnessError {
  const how = signal ? `was killed by ${signal}` : `exited with code ${code}`
  return new HarnessError('QEMU_EXITED', `QEMU ${how} before the guest was ready. Last lines of ${vm.qemuLog}:\n${tail(vm.qemuLog)}`, {
    fix: `read ${vm.qemuLog} and ${vm.serialLog}; run \`stereos-harness doctor\` to check the host`,
    logs: { qemu: vm.qemuLog, serial: vm.serialLog },
  })
}

function bootError(err: unknown, timeoutMs: number, vm: VmPaths): unknown {
  if (err instanceof HarnessError && err.code === 'BOOT_TIMEOUT') {
    return new HarnessError('BOOT_TIMEOUT', `The guest did not become ready within ${timeoutMs} ms: ${err.message}. The guest console is in ${vm.serialLog}; its last lines:\n${tail(vm.serialLog)}`, {
      fix: `read ${vm.serialLog} for where the boot stopped; raise bootTimeoutMs if the host is slow (TCG)`,
      logs: { qemu: vm.qemuLog, serial: vm.serialLog },
      cause: err,
    })
  }
  return err
}
