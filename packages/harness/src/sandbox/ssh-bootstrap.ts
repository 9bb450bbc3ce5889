import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { Client, type ConnectConfig } from 'ssh2'
import { SHARE_GUEST_PATH } from '../share/harness-share.js'
import type { Transport } from '../control/transport.js'
import { HarnessError, type HarnessErrorCode } from '../errors.js'
import { sleep } from '../host/sleep.js'

export interface SshTarget {
  /** The guest's sshd: TCP via the hostfwd, or vsock port 22. */
  transport: Transport
  user: string
  keyPath: string
}

export interface SshRunResult {
  code: number | null
  stdout: string
  stderr: string
}

/**
 * One SSH session: connect with the injected key, run `command` with `input` on stdin, disconnect.
 * A function is called once the session is up (a command that carries the time is made then).
 */
async function sshRun(target: SshTarget, command: string | (() => string), input: string, timeoutMs: number): Promise<SshRunResult> {
  const sock = await target.transport.connect(timeoutMs)
  const client = new Client()
  const config: ConnectConfig = { sock, username: target.user, privateKey: readFileSync(target.keyPath), readyTimeout: timeoutMs }
  return new Promise<SshRunResult>((resolve, reject) => {
    const fail = (err: Error) => {
      client.end()
      sock.destroy()
      reject(err)
    }
    // `on`, not `once`: ssh2 may emit a second error (e.g. "Connection lost before handshake" after
    // a protocol error), and an unheard 'error' would crash the process; the promise settles once.
    client.on('error', fail)
    client.once('ready', () => {
      client.exec(typeof command === 'function' ? command() : command, (err, stream) => {
        if (err) return fail(err)
        const stdout = boundedText(stream)
        const stderr = boundedText(stream.stderr)
        stream.once('close', (code: number | null) => {
          client.end()
          resolve({ code, stdout: stdout(), stderr: stderr() })
        })
        stream.end(input)
      })
    })
    client.connect(config)
  })
}

/** How much of a guest command's output is kept: the guest (its image may be hostile) decides how much it prints. */
const SSH_OUTPUT_MAX_BYTES = 64 * 1024

/** The first SSH_OUTPUT_MAX_BYTES of a stream, as text; the rest is read and dropped. */
export function boundedText(stream: NodeJS.ReadableStream): () => string {
  const chunks: Buffer[] = []
  let size = 0
  stream.on('data', (d: Buffer) => {
    if (size >= SSH_OUTPUT_MAX_BYTES) return
    const piece = d.subarray(0, SSH_OUTPUT_MAX_BYTES - size)
    chunks.push(piece)
    size += piece.length
  })
  return () => Buffer.concat(chunks).toString('utf8')
}

/**
 * Programs are found on PATH only (a NixOS guest has no /usr/bin beyond env, and `sudo`/`mount`
 * are setuid wrappers in /run/wrappers/bin). Admin's login shell sets that PATH on NixOS; this
 * puts the wrappers first for shells that do not (as NixOS orders them) and NixOS's system
 * profile last. /bin/sh is the one path every guest has.
 */
const GUEST_PATH = 'export PATH="/run/wrappers/bin:$PATH:/run/current-system/sw/bin"'

/**
 * The command that starts the agent detached from the SSH session. With admin's passwordless
 * sudo (stereOS grants it) the agent runs as root and reads its token from stereosd's secrets
 * dir; without sudo it runs as admin and takes the token from stdin.
 */
function startCommand(refreshAt: number | undefined, sharePath = SHARE_GUEST_PATH): string {
  const launcher = `${sharePath}/bin/agent`
  return [
    'set -e',
    GUEST_PATH,
    'IFS= read -r STEREOS_HARNESS_TOKEN || true',
    'IFS= read -r STEREOS_HARNESS_SEED || true',
    `test -r ${launcher} || { echo "the harness share is not mounted at ${sharePath}" >&2; exit 78; }`,
    'if sudo -n true 2>/dev/null; then',
    // A restored guest: the same refresh as sshRefreshRestored, in this session instead of a second one.
    ...(refreshAt === undefined ? [] : [`  printf '%s' "$STEREOS_HARNESS_SEED" | sudo -n /bin/sh -c '${refreshScript(refreshAt)}'`]),
    `  ${rootLaunch(launcher)}`,
    'else',
    '  export STEREOS_HARNESS_TOKEN',
    `  setsid /bin/sh ${launcher} stereos-harness-agent </dev/null >>"$HOME/stereos-harness-agent.log" 2>&1 &`,
    ...(refreshAt === undefined ? [] : ['  echo clock-not-set']),
    'fi',
    'echo started',
  ].join('\n')
}

/**
 * The agent started as root through sudo, detached from the session. The redirect happens inside
 * root's shell: /dev/console is root-only (as on stereOS).
 */
function rootLaunch(launcher: string, flags = ''): string {
  return `sudo -n /bin/sh -c 'setsid /bin/sh ${launcher} stereos-harness-agent${flags ? ` ${flags}` : ''} </dev/null >/dev/console 2>&1 &'`
}

/**
 * For a VM template: mount the harness share's image (the virtio-blk disk with its serial) where
 * the 9p share would be, start the agent as root waiting for a lease's token, and remove the
 * build's key from admin's authorized_keys (each lease injects its own, which replaces the file).
 */
function templateStartCommand(serial: string, sharePath = SHARE_GUEST_PATH): string {
  const launcher = `${sharePath}/bin/agent`
  return [
    'set -e',
    GUEST_PATH,
    'sudo -n true 2>/dev/null || { echo no-sudo; exit 0; }',
    'dev=',
    `for d in /sys/block/*; do if [ "$(cat "$d/serial" 2>/dev/null)" = ${serial} ]; then dev=/dev/\${d##*/}; fi; done`,
    `test -n "$dev" || { echo "the guest has no disk with serial ${serial}" >&2; exit 78; }`,
    `sudo -n mkdir -p ${sharePath}`,
    `sudo -n mount -t ext4 -o ro "$dev" ${sharePath}`,
    rootLaunch(launcher, '--await-token'),
    'rm -f "$HOME/.ssh/authorized_keys"',
    'echo started',
  ].join('\n')
}

/** As root in a restored guest: the clock to `epoch`, and stdin (host randomness) into the kernel's pool. */
function refreshScript(epoch: number): string {
  return `date -u -s @${epoch} >/dev/null && cat >/dev/urandom`
}

/** One SSH handshake authenticated with the injected key, then disconnect: sshd is up and takes the key. */
async function sshHandshake(target: SshTarget, timeoutMs: number): Promise<void> {
  const sock = await target.transport.connect(timeoutMs)
  const client = new Client()
  return new Promise<void>((resolve, reject) => {
    // `on`, not `once`: see sshRun.
    client.on('error', (err) => {
      client.end()
      sock.destroy()
      reject(err)
    })
    client.once('ready', () => {
      client.end()
      resolve()
    })
    client.connect({ sock, username: target.user, privateKey: readFileSync(target.keyPath), readyTimeout: timeoutMs })
  })
}

/**
 * Retry `attempt` until sshd accepts the injected key (sshd may start after stereosd, or be
 * restarting); a HarnessError from `attempt` is final, anything else (refused, reset, not yet
 * authorized) is retried until the deadline.
 */
async function retrySsh(
  target: SshTarget,
  deadline: number,
  signal: AbortSignal | undefined,
  timedOut: { code: HarnessErrorCode; fix: string },
  attempt: (timeoutMs: number) => Promise<void>,
): Promise<void> {
  let last: unknown
  while (Date.now() < deadline) {
    if (signal?.aborted) throw signal.reason
    try {
      return await attempt(Math.max(2000, Math.min(15_000, deadline - Date.now())))
    } catch (err) {
      if (err instanceof HarnessError) throw err
      last = err
    }
    await sleep(500)
  }
  throw new HarnessError(
    timedOut.code,
    `SSH to ${target.transport.describe()} as ${target.user} did not succeed; last error: ${(last as Error | undefined)?.message ?? 'none'}`,
    { fix: timedOut.fix },
  )
}

const SSHD_FIX = 'the mixtape must run sshd on port 22 and accept the key stereosd injected for admin (inject_ssh_key)'

/** Wait until SSH as the target user works, so `sandbox.ssh` is usable when boot resolves. */
export function waitForSsh(target: SshTarget, deadline: number, logs: { serial: string }, signal?: AbortSignal): Promise<void> {
  const timedOut = { code: 'BOOT_TIMEOUT' as const, fix: `${SSHD_FIX}; ${logs.serial} shows whether sshd started` }
  return retrySsh(target, deadline, signal, timedOut, (timeoutMs) => sshHandshake(target, timeoutMs))
}

/** Start the agent over SSH once sshd accepts the injected key. */
export function sshStartAgent(
  target: SshTarget,
  token: string,
  deadline: number,
  signal?: AbortSignal,
  refresh?: { log: (line: string) => void },
): Promise<void> {
  const timedOut = { code: 'AGENT_UNREACHABLE' as const, fix: `${SSHD_FIX}; or use a harness-ready mixtape with bootstrap: agentd` }
  return retrySsh(target, deadline, signal, timedOut, async (timeoutMs) => {
    const command = () => startCommand(refresh ? Math.round(Date.now() / 1000) : undefined)
    const result = await sshRun(target, command, `${token}\n${randomBytes(64).toString('hex')}\n`, timeoutMs)
    if (result.stdout.includes('clock-not-set'))
      refresh?.log(`could not set the restored guest's clock (no passwordless sudo for ${target.user}); it runs behind`)
    if (result.code !== 0 || !result.stdout.includes('started')) {
      throw new HarnessError('AGENT', `starting the agent over SSH failed (exit ${result.code}): ${result.stderr.trim() || result.stdout.trim()}`, {
        fix: `the mixtape needs /bin/sh and setsid, and the harness share mounted at ${SHARE_GUEST_PATH}`,
      })
    }
  })
}

/**
 * Start the agent in a guest about to be saved as a template (templateStartCommand). Without
 * passwordless sudo for admin it cannot (the agent could neither read its token nor act as root):
 * that is an error the template build logs before saving a template without the agent.
 */
export async function sshStartTemplateAgent(target: SshTarget, serial: string, deadline: number, signal?: AbortSignal): Promise<void> {
  const timedOut = { code: 'AGENT_UNREACHABLE' as const, fix: SSHD_FIX }
  await retrySsh(target, deadline, signal, timedOut, async (timeoutMs) => {
    const result = await sshRun(target, templateStartCommand(serial), '', timeoutMs)
    if (result.code === 0 && result.stdout.includes('no-sudo')) {
      throw new HarnessError('AGENT', `${target.user} has no passwordless sudo in this guest`, {
        fix: "stereOS grants admin passwordless sudo; on other images the agent starts after each restore, or use bootstrap: 'agentd'",
      })
    }
    if (result.code !== 0 || !result.stdout.includes('started')) {
      throw new HarnessError('AGENT', `starting the agent in the template failed (exit ${result.code}): ${result.stderr.trim() || result.stdout.trim()}`, {
        fix: `the mixtape needs /bin/sh, setsid, sudo for admin and ext4 support to mount the harness share image at ${SHARE_GUEST_PATH}`,
      })
    }
  })
}

/** Run `script` with `sh -s` as root through admin's passwordless sudo; its result as ssh reports it. */
export async function sshRunAsRoot(target: SshTarget, script: string, timeoutMs: number): Promise<SshRunResult> {
  return sshRun(target, `${GUEST_PATH}; sudo -n /bin/sh -s`, script, timeoutMs)
}

/**
 * A restored guest wakes with the template's clock (seconds to days behind) and the template's
 * random pool, the same in every clone. As root: step the clock to the host's, and mix fresh
 * host randomness into the guest's pool. A guest without passwordless sudo keeps both, said once.
 */
export async function sshRefreshRestored(target: SshTarget, deadline: number, signal: AbortSignal | undefined, log: (line: string) => void): Promise<void> {
  const timedOut = { code: 'AGENT_UNREACHABLE' as const, fix: SSHD_FIX }
  await retrySsh(target, deadline, signal, timedOut, async (timeoutMs) => {
    const command = () => `${GUEST_PATH}; sudo -n /bin/sh -c '${refreshScript(Math.round(Date.now() / 1000))}'`
    const result = await sshRun(target, command, randomBytes(64).toString('hex'), timeoutMs)
    if (result.code !== 0)
      log(`could not set the restored guest's clock (sudo as ${target.user}: ${result.stderr.trim() || `exit ${result.code}`}); it runs behind`)
  })
}
