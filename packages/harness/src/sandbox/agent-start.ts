import { randomBytes } from 'node:crypto'
import { AgentClient } from '../agent-client/client.js'
import { SHARE_GUEST_PATH, SHARE_TAG } from '../agent-client/share.js'
import type { Transport } from '../control/transport.js'
import { HarnessError, isHarnessError } from '../errors.js'
import { sleep } from '../host/sleep.js'
import { AGENT_PORT, TOKEN_SECRET } from '../wire/messages.js'
import type { MountPayload } from '../control/messages.js'

/** A fresh per-VM token: only the host that booted the VM learns it (through inject_secret). */
export function newAgentToken(): string {
  return randomBytes(32).toString('hex')
}

export const AGENT_NAME = 'stereos-harness'

/** The [[agents]] entry that makes agentd run our launcher (custom harness = the `agent` binary). */
export function agentJcardTable(): string {
  return [
    '',
    '# Added by stereos-harness: agentd runs `agent stereos-harness-agent`, the guest agent.',
    '[[agents]]',
    `name = "${AGENT_NAME}"`,
    'harness = "custom"',
    'type = "native"',
    'prompt = "stereos-harness-agent"',
    'restart = "always"',
    '',
  ].join('\n')
}

export function harnessMount(): MountPayload {
  return { tag: SHARE_TAG, guest_path: SHARE_GUEST_PATH, fs_type: '9p', read_only: true }
}

export function tokenSecret(token: string): Record<string, string> {
  return { [TOKEN_SECRET]: token }
}

export interface WaitAgentOptions {
  deadline: number
  signal?: AbortSignal
  /** Added to the timeout error: what to check. */
  hint: string
  logs: { serial: string; qemu: string }
}

/**
 * Connect to the agent until it answers hello. Refusals before it listens (SLIRP accepts and
 * drops, vsock answers ECONNRESET) are retried; a wrong token is not.
 */
export async function waitForAgent(transport: Transport, token: string, options: WaitAgentOptions): Promise<AgentClient> {
  let last: unknown
  while (Date.now() < options.deadline) {
    if (options.signal?.aborted) throw options.signal.reason
    try {
      return await AgentClient.connect(transport, token, Math.max(1000, Math.min(5000, options.deadline - Date.now())))
    } catch (err) {
      if (isHarnessError(err, 'AGENT_AUTH') || isHarnessError(err, 'PROTOCOL')) throw err
      last = err
    }
    await sleep(250)
  }
  throw new HarnessError('AGENT_UNREACHABLE', `the guest agent did not answer on ${transport.describe()} (guest port ${AGENT_PORT}); last error: ${(last as Error | undefined)?.message ?? 'none'}`, {
    fix: `${options.hint}; the agent's own messages are in ${options.logs.serial}`,
    logs: options.logs,
  })
}
