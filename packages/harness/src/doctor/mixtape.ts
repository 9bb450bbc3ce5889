import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { execa } from 'execa'
import type { Arch } from '../config/options.js'
import { vsockAvailability } from '../control/plane.js'
import { loadVsock, type LoadVsock } from '../control/vsock-module.js'
import { firstLine, HarnessError, isHarnessError } from '../errors.js'
import { sleep } from '../host/sleep.js'
import { log as stderrLog, type LogSink } from '../log.js'
import { Sandbox } from '../sandbox/sandbox.js'
import type { Check } from './doctor.js'
import {
  agentdCheck,
  type GuestProbe,
  ninePCheck,
  overlayCheck,
  PROBE_FILE,
  PROBE_MOUNT,
  shareImageCheck,
  sshAgentCheck,
  sudoCheck,
  templateCheck,
} from './guest-checks.js'

export interface MixtapeReport {
  ref: string
  /** Each check of the booted mixtape, `ok`/`warn`/`fail` with its fix. */
  checks: Check[]
  /** False when a boot path cannot work on this mixtape: a `fail` line says which. */
  ok: boolean
}

export interface MixtapeDoctorOptions {
  arch?: Arch
  log?: LogSink
  loadVsock?: LoadVsock
}

/**
 * Boots the mixtape once (bootstrap 'ssh', as the Vitest pool does, with a VM template) and runs
 * every check in that VM: both agent bootstraps, sudo, 9p, overlay, the share image, vsock and
 * the template. Only when the ssh bootstrap cannot start the agent is it booted a second time,
 * with agentd, to learn whether that path works.
 */
export async function runMixtapeDoctor(ref: string, options: MixtapeDoctorOptions = {}): Promise<MixtapeReport> {
  const log = options.log ?? stderrLog
  const load = options.loadVsock ?? loadVsock
  const checks: Check[] = []
  const reasons: string[] = []
  const capture: LogSink = (line) => {
    reasons.push(line)
    log(line)
  }
  const dir = mkdtempSync(join(tmpdir(), 'stereos-doctor-'))
  const nonce = randomBytes(6).toString('hex')
  writeFileSync(join(dir, PROBE_FILE), `stereos-harness doctor ${nonce}\n`)
  const vsock = await vsockAvailability(load)
  const base = {
    mixtape: ref,
    ...(options.arch ? { arch: options.arch } : {}),
    shared: [{ host: dir, guest: PROBE_MOUNT, readonly: true }],
    template: 'auto' as const,
  }
  try {
    let sandbox: Sandbox
    const started = performance.now()
    try {
      sandbox = await Sandbox.boot({ ...base, bootstrap: 'ssh' }, { log: capture, loadVsock: load })
    } catch (err) {
      checks.push(bootFailure('ssh', err))
      if (!sshStartFailed(err)) return report(ref, checks)
      // The ssh path cannot start the agent: the agentd path may, and that is worth a second boot.
      const second = await Sandbox.boot({ ...base, bootstrap: 'agentd', template: 'off' }, { log: capture, loadVsock: load }).catch((e: unknown) => e)
      if (second instanceof Sandbox) {
        checks.push({ name: 'agent: agentd', status: 'ok', detail: "agentd started the guest agent from the mixtape's `agent` launcher" })
        await second.shutdown({ timeoutMs: 10_000 })
      } else checks.push(bootFailure('agentd', second))
      return report(ref, checks)
    }
    try {
      checks.push(bootCheck(sandbox, Math.round(performance.now() - started)))
      checks.push(...(await guestChecks(sandbox, nonce, reasons)))
      checks.push(vsockGuestCheck(sandbox, vsock))
    } finally {
      await sandbox.shutdown({ timeoutMs: 10_000 })
    }
    return report(ref, checks)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

function report(ref: string, checks: Check[]): MixtapeReport {
  return { ref, checks, ok: !checks.some((c) => c.status === 'fail') }
}

/** The checks that run in the booted VM, in order (later ones build on the 9p remount). */
async function guestChecks(sandbox: Sandbox, nonce: string, reasons: string[]): Promise<Check[]> {
  const probe = sandboxProbe(sandbox)
  const agent = await sandbox.agent()
  const template = sandbox.info.template
  const checks: Check[] = [sshAgentCheck(agent.info, template?.agent === true), await sudoCheck(probe)]
  checks.push(await agentdCheck(probe, nonce))
  const nineP = await ninePCheck(probe, 'share0', `stereos-harness doctor ${nonce}\n`)
  checks.push(nineP)
  checks.push(
    nineP.status === 'ok'
      ? await overlayCheck(probe)
      : { name: 'overlay', status: 'warn', detail: 'not tried: it lies over the 9p share, which failed', fix: 'fix 9p first' },
  )
  checks.push(await shareImageCheck(probe, template, reasons))
  checks.push(templateCheck(template, reasons))
  return checks
}

function sandboxProbe(sandbox: Sandbox): GuestProbe {
  return {
    asRoot: async (script) => {
      const r = await sandbox.exec('sh', ['-c', script], { user: 'root' })
      return { code: r.exitCode, stdout: r.stdout, stderr: r.stderr }
    },
    asAdmin: async (script) => {
      if (!sandbox.ssh) throw new HarnessError('HOST', 'this VM has no SSH access (no network)')
      const r = await execa('ssh', [...sandbox.ssh.args, script], { reject: false, timeout: 60_000 })
      return { code: r.exitCode ?? null, stdout: r.stdout, stderr: r.stderr }
    },
    readFile: (path) => sandbox.readFile(path),
    health: () => sandbox.control.health(),
    setConfig: async (content) => (await sandbox.connect()).setConfig(content),
    sleep,
  }
}

function bootCheck(sandbox: Sandbox, ms: number): Check {
  const { info } = sandbox
  const how = info.template ? (info.template.built ? 'cold, saving a VM template, then restored' : 'restored from a VM template') : 'cold'
  return {
    name: 'boot',
    status: 'ok',
    detail: `${info.mixtape.ref} (${info.mixtape.version ?? 'unversioned'}) for ${info.arch} under ${info.accel.toUpperCase()}: booted ${how}, stereosd ready and the agent started over SSH in ${(ms / 1000).toFixed(1)} s`,
  }
}

/** The ssh bootstrap's own failures (sshd, sudo, the share's Node), as opposed to the mixtape or stereosd. */
function sshStartFailed(err: unknown): boolean {
  return isHarnessError(err, 'AGENT') || isHarnessError(err, 'AGENT_UNREACHABLE') || (isHarnessError(err, 'BOOT_TIMEOUT') && /SSH/.test(err.message))
}

function bootFailure(bootstrap: 'ssh' | 'agentd', err: unknown): Check {
  const fix = isHarnessError(err) && err.fix ? err.fix : 'see the message and the VM logs it names'
  return { name: bootstrap === 'ssh' ? 'boot (bootstrap ssh)' : 'agent: agentd', status: 'fail', detail: `the boot failed: ${firstLine(err)}`, fix }
}

/** vsock between host and guest: tried only where the host has vhost-vsock. */
function vsockGuestCheck(sandbox: Sandbox, host: { ok: boolean; reason: string }): Check {
  const name = 'vsock'
  const { transport } = sandbox.info
  if (!host.ok)
    return {
      name,
      status: 'warn',
      detail: `not tried: ${host.reason}; the control plane and agent went over TCP forwards`,
      fix: 'see the vhost-vsock line above',
    }
  if (transport.kind === 'vsock') return { name, status: 'ok', detail: `stereosd and the agent answered over vsock (CID ${transport.cid})` }
  return {
    name,
    status: 'warn',
    detail: `the host has vhost-vsock, but this boot used ${transport.kind}`,
    fix: 'see the boot log for why vsock was not chosen',
  }
}
