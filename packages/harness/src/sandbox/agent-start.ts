import { randomBytes } from 'node:crypto'
import { AgentClient } from '../agent-client/client.js'
import { SHARE_GUEST_PATH, SHARE_TAG } from '../share/harness-share.js'
import type { StereosdClient } from '../control/client.js'
import type { Transport } from '../control/transport.js'
import { HarnessError, isHarnessError } from '../errors.js'
import { sleep } from '../host/sleep.js'
import { AGENT_PORT, TOKEN_SECRET } from '../wire/messages.js'
import type { MountPayload } from '../control/messages.js'
import { sshStartAgent, type SshTarget } from './ssh-bootstrap.js'

/** A fresh per-VM token: only the host that booted the VM learns it (through inject_secret). */
export function newAgentToken(): string {
  return randomBytes(32).toString('hex')
}

const AGENT_NAME = 'stereos-harness'

/**
 * The [[agents]] entry that makes agentd run our launcher (custom harness = the `agent` binary).
 * agentd restarts an agent only when its entry changes: a native agent whose command died still
 * counts as running (its shell lives on). A later `start` therefore changes `env`, which makes
 * agentd stop the old session and launch the agent again.
 */
export function agentJcardTable(start = 1): string {
  return [
    '',
    '# Added by stereos-harness: agentd runs `agent stereos-harness-agent`, the guest agent.',
    '[[agents]]',
    `name = "${AGENT_NAME}"`,
    'harness = "custom"',
    'type = "native"',
    'prompt = "stereos-harness-agent"',
    'restart = "always"',
    ...(start > 1 ? [`env = { STEREOS_HARNESS_AGENT_START = "${start}" }`] : []),
    '',
  ].join('\n')
}

export function harnessMount(): MountPayload {
  return { tag: SHARE_TAG, guest_path: SHARE_GUEST_PATH, fs_type: '9p', read_only: true }
}

export function tokenSecret(token: string): Record<string, string> {
  return { [TOKEN_SECRET]: token }
}

/** What an agent started in a template answers until the lease's token is in the secrets dir. */
const NO_TOKEN_YET = /no token yet/

interface WaitAgentOptions {
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
async function waitForAgent(transport: Transport, token: string, options: WaitAgentOptions): Promise<AgentClient> {
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
  throw new HarnessError(
    'AGENT_UNREACHABLE',
    `the guest agent did not answer on ${transport.describe()} (guest port ${AGENT_PORT}); last error: ${(last as Error | undefined)?.message ?? 'none'}`,
    {
      fix: `${options.hint}; the agent's own messages are in ${options.logs.serial}`,
      logs: options.logs,
    },
  )
}

/**
 * Wait until an agent started in a template build listens: its hello refuses us for having no
 * token yet (waitForAgent's loop, whose refusals are final). An agent that knows a token would
 * put it in the template, so that is an error.
 */
export async function waitForTokenlessAgent(transport: Transport, deadline: number, signal: AbortSignal, logs: WaitAgentOptions['logs']): Promise<void> {
  const hint = 'the agent was started in the VM template build over SSH'
  let client: AgentClient
  try {
    client = await waitForAgent(transport, 'template-probe', { deadline, signal, hint, logs })
  } catch (err) {
    if (!isHarnessError(err, 'AGENT_AUTH')) throw err
    if (NO_TOKEN_YET.test(err.message)) return
    throw new HarnessError('AGENT', `the agent in the template already has a token (${err.message}); no template is saved with one`)
  }
  client.close()
  throw new HarnessError('AGENT', 'the agent in the template accepted a made-up token')
}

/**
 * How the agent gets started: agentd runs the image's launcher from our [[agents]] entry
 * (appended to `jcard`, the rest of the jcard), or SSH as admin starts it from the share.
 */
export type AgentBootstrap =
  | { kind: 'agentd'; jcard: string }
  /**
   * `restored`: the guest was restored from a template. With `agentRunning` its agent was started
   * in the template and the first start only connects; else that start also sets the clock.
   * Either way the clock and random pool are refreshed before the agent counts as ready.
   */
  | { kind: 'ssh'; ssh: SshTarget; restored?: { log: (line: string) => void; agentRunning: boolean } }

export interface AgentStartRequest {
  bootstrap: AgentBootstrap
  /** The agent's endpoint (TCP forward or vsock). */
  transport: Transport
  token: string
  /** How long the agent has to answer after each start. */
  timeoutMs: number
  /** Aborted when QEMU exits. */
  signal: AbortSignal
  logs: { serial: string; qemu: string }
}

/** A started guest agent: its first connection, what reconnecting needs, and how to start it again. */
export interface GuestAgent {
  client: AgentClient
  transport: Transport
  token: string
  bootstrap: AgentBootstrap['kind']
  /** Start the agent again (it died) and connect to the new one; `control` reaches stereosd for agentd's set_config. */
  restart(control: () => Promise<StereosdClient>): Promise<AgentClient>
}

/**
 * Start the guest agent (after provisioning: for agentd the provisioning set_config already
 * carried our [[agents]] entry) and wait until it answers hello with the token.
 */
export async function startAgent(request: AgentStartRequest): Promise<GuestAgent> {
  let starts = 1
  const client = await launch(request, starts, undefined)
  return {
    client,
    transport: request.transport,
    token: request.token,
    bootstrap: request.bootstrap.kind,
    restart: (control) => launch(request, ++starts, control),
  }
}

async function launch(request: AgentStartRequest, start: number, control: (() => Promise<StereosdClient>) | undefined): Promise<AgentClient> {
  const { bootstrap, transport, token, signal } = request
  const deadline = Date.now() + request.timeoutMs
  const restored = bootstrap.kind === 'ssh' && start === 1 ? bootstrap.restored : undefined
  if (bootstrap.kind === 'ssh') {
    if (!restored?.agentRunning) await sshStartAgent(bootstrap.ssh, token, deadline, signal, restored)
  } else if (control) await (await control()).setConfig(bootstrap.jcard + agentJcardTable(start))
  const hint =
    bootstrap.kind === 'agentd'
      ? "agentd starts the mixtape's `agent` launcher: a stock mixtape has none, boot it with bootstrap: 'ssh'"
      : restored?.agentRunning
        ? 'the agent was started in the VM template and reads its token from the secrets dir stereosd writes'
        : "the agent was started over SSH; check that the guest can run the share's Node"
  const client = await waitForAgent(transport, token, { deadline, signal, hint, logs: request.logs })
  if (restored?.agentRunning) {
    const result = await client.resync()
    if (!result.clockSet) restored.log(`could not set the restored guest's clock (${result.reason ?? 'no reason given'}); it runs behind`)
  }
  return client
}
