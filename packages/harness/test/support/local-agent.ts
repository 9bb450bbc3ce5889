import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { AgentClient } from '../../src/agent-client/client.js'
import { TcpTransport } from '../../src/control/transport.js'

/** The compiled guest agent (tsc -b runs in setup), started on this host over TCP. */
export const AGENT_MAIN = fileURLToPath(new URL('../../dist/guest-agent/main.js', import.meta.url))

export interface LocalAgent {
  port: number
  token: string
  child: ChildProcess
  store: string
  stderr: () => string
  connect(token?: string): Promise<AgentClient>
  stop(): Promise<void>
}

/**
 * Runs the real agent as a host process listening on 127.0.0.1 (the code that runs in the
 * guest, minus the VM): fast tests of ops, limits and the protocol. In-guest behaviour is
 * covered by test/e2e.
 */
export async function startLocalAgent(token = 'a'.repeat(64), extraArgs: string[] = []): Promise<LocalAgent> {
  const store = mkdtempSync(join(tmpdir(), 'agent-store-'))
  const child = spawn(
    process.execPath,
    [AGENT_MAIN, '--listen', 'tcp', '--host', '127.0.0.1', '--port', '0', '--store', store, '--default-user', 'root', ...extraArgs],
    {
      env: { ...process.env, STEREOS_HARNESS_TOKEN: token },
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  )
  let err = ''
  child.stderr?.on('data', (chunk: Buffer) => (err += chunk.toString()))
  const port = await new Promise<number>((resolve, reject) => {
    const onData = () => {
      const m = /listening on tcp 127\.0\.0\.1:(\d+)/.exec(err)
      if (m) resolve(Number(m[1]))
    }
    child.stderr?.on('data', onData)
    child.once('exit', (code) => reject(new Error(`agent exited with ${code}: ${err}`)))
  })
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  return {
    port,
    token,
    child,
    store,
    stderr: () => err,
    connect: (t = token) => AgentClient.connect(new TcpTransport('127.0.0.1', port), t, 5000),
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM')
      await exited
      rmSync(store, { recursive: true, force: true })
    },
  }
}
