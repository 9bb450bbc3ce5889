import type { HealthPayload } from '../control/messages.js'
import { firstLine } from '../errors.js'
import { SHARE_GUEST_PATH } from '../share/harness-share.js'
import { SHARE_DISK_SERIAL } from '../share/share-image.js'
import type { TemplateUse } from '../sandbox/guest-start.js'
import type { Check } from './doctor.js'
import { VIEW_9P_OPTIONS } from '../view.js'

/**
 * What the checks of `doctor --mixtape` need from one booted VM (mixtape.ts gives them a
 * Sandbox's; the unit tests a fake), so each check is a small function of what it found.
 */
export interface GuestProbe {
  /** A shell script as root through the guest agent. */
  asRoot(script: string): Promise<ShellResult>
  /** A shell script over SSH as admin, as the ssh bootstrap runs its own. */
  asAdmin(script: string): Promise<ShellResult>
  readFile(path: string): Promise<Buffer>
  health(): Promise<HealthPayload>
  setConfig(content: string): Promise<void>
  sleep(ms: number): Promise<void>
}

export interface ShellResult {
  code: number | null
  stdout: string
  stderr: string
}

/** The PATH the ssh bootstrap sets (ssh-bootstrap.ts GUEST_PATH): NixOS's setuid wrappers first. */
export const GUEST_PATH = 'export PATH="/run/wrappers/bin:$PATH:/run/current-system/sw/bin"'

/** Where the doctor's 9p share is mounted by stereosd, and the file it holds. */
export const PROBE_MOUNT = '/mnt/stereos-harness-doctor'
export const PROBE_FILE = 'probe.txt'

const SUDO_FIX =
  'grant admin passwordless sudo (stereOS does: `%wheel ALL=(ALL:ALL) NOPASSWD: ALL`; on NixOS `security.sudo.wheelNeedsPassword = false` with admin in wheel)'

/** Admin's passwordless sudo as the ssh bootstrap uses it, and which sudo it found. */
export async function sudoCheck(probe: GuestProbe): Promise<Check> {
  const name = 'sudo'
  const script = [
    GUEST_PATH,
    'echo "found=$(command -v sudo || true)"',
    'test -e /usr/bin/sudo && echo has=/usr/bin/sudo',
    'test -e /run/wrappers/bin/sudo && echo has=/run/wrappers/bin/sudo',
    'sudo -n true 2>/dev/null && echo sudo-ok',
    'true',
  ].join('\n')
  let result: ShellResult
  try {
    result = await probe.asAdmin(script)
  } catch (err) {
    return {
      name,
      status: 'fail',
      detail: `SSH as admin failed: ${firstLine(err)}`,
      fix: 'the mixtape must run sshd and accept the key stereosd injects for admin',
    }
  }
  const found = /^found=(.*)$/m.exec(result.stdout)?.[1] ?? ''
  const has = [...result.stdout.matchAll(/^has=(.*)$/gm)].map((m) => m[1])
  const where = `${found ? `sudo is ${found}` : 'no sudo on PATH'}; /usr/bin/sudo ${has.includes('/usr/bin/sudo') ? 'exists' : 'does not exist'}${has.includes('/run/wrappers/bin/sudo') ? ', /run/wrappers/bin/sudo exists' : ''}`
  if (result.stdout.includes('sudo-ok')) return { name, status: 'ok', detail: `admin's passwordless sudo works over SSH (${where})` }
  return {
    name,
    status: 'fail',
    detail: `admin has no passwordless sudo (${where}): the ssh bootstrap runs the agent as admin, and the Vitest pool needs it as root`,
    fix: SUDO_FIX,
  }
}

/** The agent the boot started over SSH: as root (through sudo) or as admin. */
export function sshAgentCheck(agent: { user: string; root: boolean; node: string }, restored: boolean): Check {
  const name = 'agent: ssh'
  const how = restored ? 'started over SSH in the VM template, running in this restored VM' : 'started over SSH as admin'
  if (agent.root) return { name, status: 'ok', detail: `the guest agent (${agent.node}) ${how}, as root through sudo` }
  return {
    name,
    status: 'warn',
    detail: `the guest agent ${how} runs as ${agent.user}, not root (no passwordless sudo): exec as root and the Vitest pool do not work`,
    fix: SUDO_FIX,
  }
}

const AGENTD_FIX =
  "put the harness's `agent` launcher on agentd's PATH (README: a harness-ready mixtape), or boot with bootstrap: 'ssh' (the Vitest pool's default)"

/** How long agentd gets to start the probe agent (it reconciles its jcard every few seconds). */
const AGENTD_WAIT_MS = 30_000

/**
 * agentd's path: a `custom` native agent in the jcard makes agentd run `agent <prompt>`; the
 * launcher runs any prompt other than its own as a shell command, so the probe's prompt writes
 * which `agent` it was. That file is then compared with the share's launcher.
 */
export async function agentdCheck(probe: GuestProbe, nonce: string): Promise<Check> {
  const name = 'agent: agentd'
  const out = `/tmp/stereos-harness-doctor-${nonce}`
  const agentName = `stereos-harness-doctor-${nonce}`
  try {
    const jcard = (await probe.readFile('/etc/stereos/jcard.toml')).toString('utf8')
    const prompt = `command -v agent > ${out}`
    const table = [
      '',
      '[[agents]]',
      `name = "${agentName}"`,
      'harness = "custom"',
      'type = "native"',
      `prompt = ${JSON.stringify(prompt)}`,
      'restart = "no"',
      '',
    ].join('\n')
    await probe.setConfig(jcard + table)
  } catch (err) {
    return { name, status: 'warn', detail: `could not hand agentd a probe agent: ${firstLine(err)}`, fix: AGENTD_FIX }
  }
  let lastError: string | undefined
  for (let waited = 0; waited <= AGENTD_WAIT_MS; waited += 1000) {
    const found = await probe.asRoot(`cat ${out} 2>/dev/null`)
    const launcher = found.stdout.trim()
    if (found.code === 0 && launcher) return launcherCheck(probe, name, launcher)
    const status = (await probe.health().catch(() => undefined))?.agents?.find((a) => a.name === agentName)
    lastError = status?.error ?? lastError
    await probe.sleep(1000)
  }
  return {
    name,
    status: 'warn',
    detail: `agentd did not run \`agent\` for a custom agent within ${AGENTD_WAIT_MS / 1000} s${lastError ? `: ${lastError}` : ' (stereosd reported no error for it)'}`,
    fix: AGENTD_FIX,
  }
}

async function launcherCheck(probe: GuestProbe, name: string, launcher: string): Promise<Check> {
  const [theirs, ours] = await Promise.all([probe.readFile(launcher), probe.readFile(`${SHARE_GUEST_PATH}/bin/agent`)]).catch(() => [undefined, undefined])
  if (theirs && ours && theirs.equals(ours)) return { name, status: 'ok', detail: `agentd runs the harness's launcher ${launcher} for a custom agent` }
  return {
    name,
    status: 'warn',
    detail: `agentd runs ${launcher} for a custom agent, but it is not the harness's launcher (it differs from the share's bin/agent): agentd would not start the guest agent`,
    fix: AGENTD_FIX,
  }
}

const NINEP_FIX = 'the guest kernel needs 9p over virtio (CONFIG_9P_FS, CONFIG_NET_9P_VIRTIO; stereOS has both)'

/**
 * stereosd's 9p mount of a host dir, then the remount the Vitest pool makes of it (page-cached,
 * pool/view.ts): the file the host put there reads back through both.
 */
export async function ninePCheck(probe: GuestProbe, tag: string, expected: string): Promise<Check> {
  const name = '9p'
  const lower = '/var/lib/stereos-harness/doctor/lower'
  const script = [
    'set -u',
    GUEST_PATH,
    `grep -q " ${PROBE_MOUNT} 9p " /proc/mounts || { echo "stereosd did not mount the share at ${PROBE_MOUNT}" >&2; exit 3; }`,
    `cat ${PROBE_MOUNT}/${PROBE_FILE} || exit 4`,
    `umount ${PROBE_MOUNT} && mkdir -p ${lower} &&`,
    `  mount -t 9p -o ${VIEW_9P_OPTIONS} ${tag} ${lower} || exit 5`,
    `cat ${lower}/${PROBE_FILE} || exit 6`,
  ].join('\n')
  const result = await probe.asRoot(script)
  const expectedTwice = expected + expected
  if (result.code === 0 && result.stdout === expectedTwice)
    return { name, status: 'ok', detail: `stereosd mounted a host dir over 9p, and the pool's page-cached remount (cache=loose) reads it` }
  const what =
    result.code === 5
      ? "the pool's remount with cache=loose failed"
      : result.code === 3
        ? 'stereosd did not mount the share'
        : 'the host file did not read back'
  return { name, status: 'fail', detail: `${what}: ${result.stderr.trim() || `exit ${result.code}`}`, fix: NINEP_FIX }
}

/** An overlay with its upper dir on the VM's disk over the 9p lower, as the pool lays out the project view. */
export async function overlayCheck(probe: GuestProbe): Promise<Check> {
  const name = 'overlay'
  const v = '/var/lib/stereos-harness/doctor'
  const script = [
    'set -eu',
    GUEST_PATH,
    `mkdir -p ${v}/upper ${v}/work ${v}/merged`,
    `mount -t overlay stereos-doctor -o lowerdir=${v}/lower,upperdir=${v}/upper,workdir=${v}/work ${v}/merged`,
    `cat ${v}/merged/${PROBE_FILE} >/dev/null`,
    `echo written > ${v}/merged/new.txt`,
    `test -f ${v}/upper/new.txt`,
    `umount ${v}/merged`,
  ].join('\n')
  const result = await probe.asRoot(script)
  if (result.code === 0) return { name, status: 'ok', detail: "an overlay over the 9p share takes writes into its upper dir on the VM's disk" }
  return {
    name,
    status: 'fail',
    detail: `an overlay over the 9p share failed: ${result.stderr.trim() || `exit ${result.code}`}`,
    fix: 'the guest kernel needs overlayfs (CONFIG_OVERLAY_FS; stereOS has it)',
  }
}

/** The share image (virtio-blk, ext4): what VM templates run the agent from. */
export async function shareImageCheck(probe: GuestProbe, template: TemplateUse | undefined, reasons: string[]): Promise<Check> {
  const name = 'share image'
  const script = [
    'for d in /sys/block/*; do',
    `  if [ "$(cat "$d/serial" 2>/dev/null)" = ${SHARE_DISK_SERIAL} ]; then echo "disk=/dev/\${d##*/}"; fi`,
    'done',
    `grep " ${SHARE_GUEST_PATH} " /proc/mounts | cut -d' ' -f1,3 | sed 's/^/mount=/'`,
    'true',
  ].join('\n')
  const result = await probe.asRoot(script)
  const disk = /^disk=(.*)$/m.exec(result.stdout)?.[1]
  const mount = /^mount=(.*)$/m.exec(result.stdout)?.[1]
  if (template?.agent && disk)
    return {
      name,
      status: 'ok',
      detail: `the harness share's image is virtio-blk disk ${disk} (mounted: ${mount ?? 'no'}); the VM template's agent ran from it`,
    }
  const why = reasons.find((r) => /template|share image|ext4|zstd/i.test(r))
  return {
    name,
    status: 'warn',
    detail: `${disk ? `virtio-blk disk ${disk} is there, but ` : 'the share image disk is not attached: '}no agent ran from it in a VM template${why ? ` (${why})` : ''}: every lease starts its own agent (slower)`,
    fix: 'the guest needs ext4 and virtio-blk, and admin passwordless sudo (the template agent is started over SSH)',
  }
}

/** The VM template: saved by this boot, or one saved earlier that this VM was restored from. */
export function templateCheck(template: TemplateUse | undefined, reasons: string[]): Check {
  const name = 'template save'
  if (template) {
    const agent = template.agent ? 'with the agent running in it' : 'without an agent'
    return {
      name,
      status: 'ok',
      detail: template.built
        ? `saved VM template ${template.id} (${agent}) and restored this VM from it`
        : `this VM was restored from VM template ${template.id} (${agent}), saved by an earlier boot`,
    }
  }
  const why = reasons.find((r) => /template|zstd/i.test(r))
  return {
    name,
    status: 'warn',
    detail: `no VM template was saved${why ? `: ${why}` : ''}: every VM of this kind boots cold`,
    fix: why && /zstd/.test(why) ? 'apt-get install zstd' : 'see the reason above; boots still work, only slower',
  }
}
