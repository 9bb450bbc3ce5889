import { existsSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { basename, join } from 'node:path'
import { ensureHarnessShare } from '../share/harness-share.js'
import { ensureShareImage, SHARE_DISK_SERIAL } from '../share/share-image.js'
import type { BootPlan } from '../config/plan.js'
import { provision, type ProvisionPlan } from '../control/provision.js'
import { traced } from '../control/traced-transport.js'
import { loadVsock, type LoadVsock } from '../control/vsock-module.js'
import { firstLine, HarnessError } from '../errors.js'
import { TOKEN_SECRET } from '../wire/messages.js'
import { debug, log as stderrLog, type LogSink } from '../log.js'
import { resolveMixtape } from '../mixtape/resolve.js'
import { chooseControlPlane } from '../control/plane.js'
import { planNetwork } from '../vmm/network/plan.js'
import { chooseForwardScope } from '../vmm/network/private-network.js'
import { sshAccess } from '../vmm/network/ssh-access.js'
import { requireQemu } from '../vmm/qemu-process.js'
import { createVmDir, markKept, type VmPaths } from '../vmm/vm-dir.js'
import { chooseAccel } from './accel.js'
import { agentJcardTable, harnessMount, newAgentToken, startAgent, tokenSecret, type AgentBootstrap, type GuestAgent } from './agent-start.js'
import { defaultJcard } from './jcard.js'
import type { SandboxParts } from './parts.js'
import { startGuest, type CapturedGuest } from './guest-start.js'
import { nameHostInGuest } from './host-name.js'
import { startAgentInTemplate } from './template-agent.js'
import { kernelBoot, qemuSpecFor, type QemuLaunch } from './qemu-start.js'
import { BootPhases } from './phases.js'
import { prepareRuntimeDir } from './runtime-dir.js'
import { sshRefreshRestored, waitForSsh } from './ssh-bootstrap.js'
import { writeSshKey, type SshKeyPair } from './ssh-key.js'

export interface BootHooks {
  /** Where harness log lines go (default: stderr with a `stereos-harness:` prefix). */
  log?: LogSink
  /** The vsock addon package (default: `@stereos/vsock`, imported on first use); tests inject a fake. */
  loadVsock?: LoadVsock
  /** Restore a captured guest instead of booting (`stereos-harness debug`). */
  restore?: CapturedGuest
}

const trace = debug('stereos:boot')

/**
 * Boot a VM, wait for stereosd, provision it and start its agent; returns the parts a Sandbox is
 * made of (Sandbox.boot wraps them). The phases run in order, each registering how to undo what
 * it made; a failing phase undoes them all (QEMU killed, CID released, disk removed or the VM
 * dir kept for forensics) and its error is what the caller gets.
 */
export function bootSandbox(options: BootPlan, hooks: BootHooks = {}): Promise<SandboxParts> {
  const log = hooks.log ?? stderrLog
  const load = hooks.loadVsock ?? loadVsock
  return BootPhases.run(trace, async (phases) => {
    // Host: nothing is created for the VM until 'vm-dir', so nothing before it needs undoing.
    const { arch } = options
    checkShares(options)
    const runtimeDir = prepareRuntimeDir(options.runtimeDir, log)
    const mixtape = await phases.phase('mixtape', () => resolveMixtape(options.mixtape, { arch, log }), 'mixtape-resolved')
    const boot = kernelBoot(mixtape)
    const { accel, note } = await phases.phase('accel', () => chooseAccel(options, log))
    const binary = requireQemu(options.qemuBinary)
    // The share is a QEMU argument (built once per harness version, cached).
    const agentShare = options.bootstrap === 'none' ? undefined : await phases.phase('harness-share', () => ensureHarnessShare(arch, { log }))
    // The agent can run in a template only when it is started over SSH: agentd runs it as `agent`.
    const shareImage =
      agentShare && options.bootstrap === 'ssh' && options.template === 'auto'
        ? await phases.phase('share-image', () => shareImageOrNone(agentShare, log))
        : undefined

    const plane = await phases.phase('control-plane', async (undo) => {
      const plane = await chooseControlPlane(options.controlPlane, { log, load })
      // Without a QEMU nobody else holds the CID; with one, QEMU is killed first (undo is LIFO).
      if (plane.kind === 'vsock') undo(() => plane.release())
      return plane
    })

    const vm = await phases.phase('vm-dir', (undo) => {
      const vm = createVmDir(runtimeDir)
      undo((failure) => (options.keepOnFailure ? markKept(vm.dir, `boot failed: ${firstLine(failure)}`) : rmSync(vm.disk, { force: true })))
      return vm
    })

    const net = await phases.phase('network', async () => {
      // QEMU in a private network namespace where possible: its forwards then reach only this user.
      const nic = !(plane.kind === 'vsock' && options.network.mode === 'none')
      const scope = await chooseForwardScope({ nic, udpForwards: options.network.forwards.some((f) => f.proto === 'udp') }, { log })
      return planNetwork({
        plane,
        mode: options.network.mode,
        forwards: [...options.network.forwards],
        hostPorts: options.network.hostPorts,
        agent: agentShare !== undefined,
        load,
        scope,
        vmDir: vm.dir,
      })
    })
    const guest = guestCredentials(vm, options)

    const control = traced(net.control, 'control')
    const agentEndpoint = net.agent && traced(net.agent, 'wire')
    const launch: QemuLaunch = {
      binary,
      spec: {
        ...qemuSpecFor({ options, accel, boot, vm, network: net.qemu, agentShare }),
        ...(shareImage ? { imageDisk: { path: shareImage, serial: SHARE_DISK_SERIAL } } : {}),
      },
      vm,
      fds: plane.kind === 'vsock' ? [plane.fd] : [],
      netns: net.netns,
      hostPorts: net.hostPorts,
      detachable: options.detachable,
    }
    const booted = await startGuest({
      launch,
      mixtape,
      diskBytes: options.resources.disk,
      control,
      bootTimeoutMs: options.bootTimeoutMs,
      template: options.template,
      log,
      phases,
      ...(hooks.restore ? { restore: hooks.restore } : {}),
      ...(shareImage && agentEndpoint
        ? {
            prepareTemplate: (client, qemu) =>
              startAgentInTemplate(
                {
                  ssh: net.ssh,
                  agent: agentEndpoint,
                  keyPath: join(vm.dir, 'template-build-key'),
                  timeoutMs: options.agentTimeoutMs,
                  logs: logsOf(vm),
                },
                client,
                qemu,
              ),
          }
        : {}),
    })
    const { qemu, client: ready } = booted
    // Restored with the agent running: the share is its image, mounted in the template (not 9p).
    const agentRunning = booted.template?.agent === true
    // Our copy of the vhost fd lives as long as QEMU does (see VsockPlane.release).
    if (plane.kind === 'vsock') void qemu.process.exited.then(() => plane.release())

    // An agent that is already running needs only its token: that goes first, and the agent is
    // reached while the rest of provisioning goes on.
    let tokenInjected: () => void = () => undefined
    const tokenIn = new Promise<void>((resolve) => (tokenInjected = resolve))
    const plan = provisionPlan(options, guest, agentShare !== undefined, agentRunning)
    const provisioned = phases.phase('provision', () => provision(ready, plan, (_, name) => name === TOKEN_SECRET && tokenInjected()), 'provisioned')
    provisioned.catch(() => undefined)
    await (agentRunning ? Promise.race([tokenIn, provisioned]) : provisioned)

    // A restored guest has the template's clock and random pool until refreshed: by the agent's
    // resync when it ran in the template, in the SSH session that starts it (bootstrap 'ssh'),
    // else in an SSH session beside the agent's start, which also proves what the ssh-ready wait
    // below would. (sshd took a key in the template build, and inject_ssh_key has replaced it.)
    const ssh = sshAccess({ socket: net.sockets.ssh, port: net.ports.ssh }, guest.key.privateKeyPath, vm.id)
    const admin = { transport: net.ssh, user: 'admin', keyPath: guest.key.privateKeyPath }
    const refreshed =
      booted.template && ssh && options.bootstrap !== 'ssh'
        ? phases.phase('refresh', () => sshRefreshRestored(admin, Date.now() + options.agentTimeoutMs, qemu.died, log), 'ssh-ready')
        : undefined
    refreshed?.catch(() => undefined)

    let agent: GuestAgent | undefined
    if (agentShare && agentEndpoint) {
      const bootstrap: AgentBootstrap =
        options.bootstrap === 'ssh'
          ? { kind: 'ssh', ssh: admin, ...(booted.template ? { restored: { log, agentRunning } } : {}) }
          : { kind: 'agentd', jcard: guest.baseJcard }
      agent = await phases.phase(
        'agent',
        async (undo) => {
          const started = await startAgent({
            bootstrap,
            transport: agentEndpoint,
            token: guest.token,
            timeoutMs: options.agentTimeoutMs,
            signal: qemu.died,
            logs: logsOf(vm),
          })
          undo(() => started.client.close())
          return started
        },
        'agent-ready',
      )
    }

    await provisioned
    await refreshed

    // sandbox.ssh must work once boot resolves: sshd may come up after stereosd (the fixture
    // starts it later), and the key arrived only with provisioning. The ssh bootstrap and the
    // refresh of a restored guest proved it.
    if (ssh && options.bootstrap !== 'ssh' && !refreshed) {
      const target = { transport: net.ssh, user: ssh.user, keyPath: ssh.keyPath }
      await phases.phase('ssh', () => waitForSsh(target, Date.now() + options.agentTimeoutMs, logsOf(vm), qemu.died), 'ssh-ready')
    }
    if (net.hostPorts.length) {
      const route = { agent: agent?.client, ssh: ssh ? admin : undefined, timeoutMs: options.agentTimeoutMs }
      await phases.phase('host-name', () => nameHostInGuest(route))
    }

    return {
      info: {
        id: vm.id,
        arch,
        accel,
        accelNote: note,
        mixtape: { ref: mixtape.ref, dir: mixtape.dir, version: mixtape.version },
        transport: net.controlInfo,
        ports: net.ports,
        sockets: net.sockets,
        vmDir: vm.dir,
        pid: qemu.process.pid,
        timeline: phases.timeline.entries,
        template: booted.template,
      },
      logs: logsOf(vm),
      ssh,
      control: ready,
      transport: control,
      agent,
      qemu: qemu.process,
      qmp: () => qemu.qmp,
      keepOnFailure: options.keepOnFailure,
      detachable: options.detachable,
      log,
      capture: {
        arch,
        qemuBinary: binary,
        spec: launch.spec,
        mixtape,
        diskBytes: options.resources.disk,
        vmDisk: vm.disk,
        controlPlane: net.controlInfo.kind,
        network: options.network.mode,
        bootstrap: options.bootstrap,
        shares: options.shared.map((share, i) => ({ tag: `share${i}`, guest: share.guest, readonly: share.readonly })),
        shareVersion: agentShare ? basename(agentShare) : undefined,
        admin: ssh ? admin : undefined,
        secretValues: [
          ...Object.entries(options.secrets).map(([name, value]) => ({ what: `secret ${name}`, value })),
          { what: 'the agent token', value: guest.token },
          { what: 'the SSH public key', value: guest.key.publicKey.split(' ')[1] ?? guest.key.publicKey },
        ],
      },
    }
  })
}

/** The shared dirs exist (the plan made their paths absolute): a bad one fails before anything starts. */
function checkShares(options: BootPlan): void {
  options.shared.forEach((share, i) => {
    if (!existsSync(share.host) || !statSync(share.host).isDirectory()) {
      throw new HarnessError('INVALID_OPTIONS', `options.shared.${i}.host: ${share.host} is not a directory`, {
        fix: 'create the directory or correct the path',
      })
    }
  })
}

/** Per-VM secrets made on the host: the agent token, the SSH key pair, the jcard (written to the VM dir). */
interface GuestCredentials {
  token: string
  key: SshKeyPair
  /** What set_config sends: the user's (or default) jcard plus, for agentd, our [[agents]] entry. */
  jcard: string
  /** The user's (or default) jcard alone. */
  baseJcard: string
}

function guestCredentials(vm: VmPaths, options: BootPlan): GuestCredentials {
  const token = newAgentToken()
  const key = writeSshKey(vm.sshKey, `stereos-${vm.id}`)
  const baseJcard = options.jcard ?? defaultJcard(vm.id, options)
  const jcard = baseJcard + (options.bootstrap === 'agentd' ? agentJcardTable() : '')
  writeFileSync(vm.jcard, jcard)
  return { token, key, jcard, baseJcard }
}

const saidNoImage = new Set<string>()

/** The share image for a template's agent, or undefined (said once per share) when it cannot be built here. */
async function shareImageOrNone(shareDir: string, log: LogSink): Promise<string | undefined> {
  try {
    return await ensureShareImage(shareDir)
  } catch (err) {
    if (!saidNoImage.has(shareDir)) log(`${firstLine(err)}: VM templates hold no agent, which leases then start over SSH`)
    saidNoImage.add(shareDir)
    return undefined
  }
}

/** What provisioning sends; with `agentRunning` (restored with its agent) the token goes first and the 9p share is not mounted. */
function provisionPlan(options: BootPlan, guest: GuestCredentials, withAgent: boolean, agentRunning: boolean): ProvisionPlan {
  const mounts = options.shared.map((share, i) => ({
    tag: `share${i}`,
    guest_path: share.guest,
    fs_type: '9p' as const,
    ...(share.readonly ? { read_only: true } : {}),
  }))
  return {
    mounts: withAgent && !agentRunning ? [...mounts, harnessMount()] : mounts,
    early: agentRunning ? tokenSecret(guest.token) : {},
    secrets: withAgent && !agentRunning ? { ...options.secrets, ...tokenSecret(guest.token) } : options.secrets,
    sshKey: { user: 'admin', publicKey: guest.key.publicKey },
    jcard: guest.jcard,
  }
}

function logsOf(vm: VmPaths): { qemu: string; serial: string } {
  return { qemu: vm.qemuLog, serial: vm.serialLog }
}
