import { readFileSync } from 'node:fs'
import { Client, type ConnectConfig } from 'ssh2'
import { SHARE_GUEST_PATH } from '../agent-client/share.js'
import type { Transport } from '../control/transport.js'
import { HarnessError } from '../errors.js'
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

/** One SSH session: connect with the injected key, run `command` with `input` on stdin, disconnect. */
export async function sshRun(target: SshTarget, command: string, input: string, timeoutMs: number): Promise<SshRunResult> {
  const sock = await target.transport.connect(timeoutMs)
  const client = new Client()
  const config: ConnectConfig = { sock, username: target.user, privateKey: readFileSync(target.keyPath), readyTimeout: timeoutMs }
  return new Promise<SshRunResult>((resolve, reject) => {
    const fail = (err: Error) => {
      client.end()
      sock.destroy()
      reject(err)
    }
    client.once('error', fail)
    client.once('ready', () => {
      client.exec(command, (err, stream) => {
        if (err) return fail(err)
        let stdout = ''
        let stderr = ''
        stream.on('data', (d: Buffer) => (stdout += d.toString()))
        stream.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
        stream.once('close', (code: number | null) => {
          client.end()
          resolve({ code, stdout, stderr })
        })
        stream.end(input)
      })
    })
    client.connect(config)
  })
}

/**
 * The command that starts the agent detached from the SSH session. With admin's passwordless
 * sudo (stereOS grants it) the agent runs as root and reads its token from stereosd's secrets
 * dir; without sudo it runs as admin and takes the token from stdin.
 */
export function startCommand(sharePath = SHARE_GUEST_PATH): string {
  const launcher = `${sharePath}/bin/agent`
  return [
    'set -e',
    'IFS= read -r STEREOS_HARNESS_TOKEN || true',
    `test -r ${launcher} || { echo "the harness share is not mounted at ${sharePath}" >&2; exit 78; }`,
    'if sudo -n true 2>/dev/null; then',
    // The redirect happens inside root's shell: /dev/console is root-only (as on stereOS).
    `  sudo -n /bin/sh -c 'setsid /bin/sh ${launcher} stereos-harness-agent </dev/null >/dev/console 2>&1 &'`,
    'else',
    '  export STEREOS_HARNESS_TOKEN',
    `  setsid /bin/sh ${launcher} stereos-harness-agent </dev/null >>"$HOME/stereos-harness-agent.log" 2>&1 &`,
    'fi',
    'echo started',
  ].join('\n')
}

/** Retry until sshd accepts the injected key (it may still be starting), then start the agent. */
export async function sshStartAgent(target: SshTarget, token: string, deadline: number, signal?: AbortSignal): Promise<void> {
  let last: unknown
  while (Date.now() < deadline) {
    if (signal?.aborted) throw signal.reason
    try {
      const result = await sshRun(target, startCommand(), `${token}\n`, Math.max(2000, Math.min(15_000, deadline - Date.now())))
      if (result.code !== 0 || !result.stdout.includes('started')) {
        throw new HarnessError('AGENT', `starting the agent over SSH failed (exit ${result.code}): ${result.stderr.trim() || result.stdout.trim()}`, {
          fix: `the mixtape needs /bin/sh and setsid, and the harness share mounted at ${SHARE_GUEST_PATH}`,
        })
      }
      return
    } catch (err) {
      if (err instanceof HarnessError) throw err
      last = err
    }
    await sleep(500)
  }
  throw new HarnessError('AGENT_UNREACHABLE', `SSH to ${target.transport.describe()} as ${target.user} did not succeed; last error: ${(last as Error | undefined)?.message ?? 'none'}`, {
    fix: 'the mixtape must run sshd and accept the key stereosd injected (inject_ssh_key for admin); or use a harness-ready mixtape with bootstrap: agentd',
  })
}
