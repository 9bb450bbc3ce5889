#!/usr/bin/env node
/**
 * The guest agent: what `agent stereos-harness-agent` (the launcher agentd runs) or the SSH
 * bootstrap starts inside the VM. Serves the host's ops (spawn, files) over vsock or TCP to
 * whoever presents the VM's token.
 */
import { existsSync, readFileSync } from 'node:fs'
import { homedir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { AGENT_PORT, TOKEN_SECRET, type AgentInfo } from '../wire/messages.js'
import { agentIsRoot, agentUserName } from './identity.js'
import { listen, type ListenMode } from './listen.js'
import { limitedLog } from './log-limit.js'
import { prepareResync } from './resync.js'
import { serveConnection } from './session.js'
import { BlobStore } from './store.js'
import { DEFAULT_WORKER_CGROUPS, WorkerCgroups } from './worker-cgroups.js'

const log = (line: string) => process.stderr.write(`stereos-harness-agent: ${line}\n`)

const SECRETS_DIR = '/run/stereos/secrets'

/** The token comes from agentd (secrets become env) or, for a root agent, from stereosd's secrets dir. */
function readToken(): string | undefined {
  const fromEnv = process.env[TOKEN_SECRET]
  if (fromEnv) return fromEnv.trim()
  const file = join(SECRETS_DIR, TOKEN_SECRET)
  return existsSync(file) ? readFileSync(file, 'utf8').trim() || undefined : undefined
}

/**
 * `--await-token`: an agent started in a VM template runs before any lease has injected its
 * token, so it reads the secrets dir when a host connects (refusing everyone until then) and
 * keeps the first token it finds. A template therefore never holds a token.
 */
function tokenSource(awaitToken: boolean): () => string | undefined {
  let token = readToken()
  delete process.env[TOKEN_SECRET]
  if (token === undefined && !awaitToken)
    throw new Error(
      `no token: neither $${TOKEN_SECRET} nor ${join(SECRETS_DIR, TOKEN_SECRET)} is set; the host injects it with inject_secret before starting the agent`,
    )
  return () => {
    token ??= readToken()
    return token
  }
}

function shareVersion(here: string): string {
  const file = join(here, '..', '..', 'VERSION')
  return existsSync(file) ? readFileSync(file, 'utf8').trim() : 'dev'
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      listen: { type: 'string', default: 'auto' },
      port: { type: 'string', default: String(AGENT_PORT) },
      host: { type: 'string', default: '0.0.0.0' },
      store: { type: 'string' },
      vsock: { type: 'string' },
      'default-user': { type: 'string', default: 'agent' },
      'await-token': { type: 'boolean', default: false },
      'worker-cgroups': { type: 'string', default: DEFAULT_WORKER_CGROUPS },
    },
  })
  const mode = values.listen as ListenMode
  if (!['auto', 'vsock', 'tcp'].includes(mode)) throw new Error(`--listen must be auto, vsock or tcp, got ${mode}`)
  const here = dirname(fileURLToPath(import.meta.url))
  const token = tokenSource(values['await-token'])
  // Started in a template: the `date` for the one resync after its restore is already waiting.
  if (values['await-token']) prepareResync()
  const storeDir =
    values.store ??
    (agentIsRoot() ? '/var/cache/stereos-harness/blobs' : join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'stereos-harness', 'blobs'))
  const vsockModule = values.vsock ?? join(here, '..', '..', 'vsock', 'dist', 'index.js')
  const info: AgentInfo = {
    agentVersion: shareVersion(here),
    node: process.version,
    arch: process.arch,
    pid: process.pid,
    user: agentUserName(),
    root: agentIsRoot(),
    listen: 'tcp',
    execPath: process.execPath,
  }
  const ctx = {
    token,
    info,
    store: new BlobStore(storeDir),
    helloTimeoutMs: 10_000,
    defaultUser: values['default-user'],
    workerCgroups: new WorkerCgroups(values['worker-cgroups']),
    log,
    logRefusal: limitedLog(log),
  }
  const listening = await listen(mode, Number(values.port), values.host, vsockModule, (socket) => {
    serveConnection(socket, ctx).catch((err: unknown) => log(`connection failed: ${(err as Error).message}`))
  })
  info.listen = listening.kind
  log(`listening on ${listening.describe} as ${info.user} (node ${process.version}, store ${storeDir})`)
  const stop = () => {
    listening.close()
    process.exit(0)
  }
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
}

main().catch((err: unknown) => {
  log(`fatal: ${(err as Error).message}`)
  process.exit(1)
})
