/**
 * Runs inside the VM, one process per PoolWorker: Vitest's real worker (`vitest/worker` from the
 * host's `distPath`, at the same path in the project view), talking to the host pool over fd 3,
 * the agent's ipc channel, in length-prefixed v8 messages.
 *
 *   STEREOS_WORKER='{"dist":"<vitest distPath>"}' node worker-entry.js
 *
 * The agent starts it as the host user's uid/gid (root when that is root; no supplementary groups,
 * no_new_privs, so no setuid program raises it), so the project view's files belong to the tests as they do on the
 * host; nothing in this process ever runs as another user, and the pool sets its priority through
 * the agent (a spare waits at nice 19). Its argv is what the forks
 * pool's worker has (`node <entry>`): code that reads process.argv.slice(2) sees nothing extra.
 */
import { lstatSync, mkdirSync } from 'node:fs'
import module from 'node:module'
import { Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { encodeV8, V8Decoder } from '@stereos/harness/wire'
import { HOST_FS_GLOBAL, HOST_FS_TAG, isHostFsReply, type HostFs, type HostFsOp } from '../shared/host-fs.js'

type Listener = (message: unknown) => void

interface WorkerConfig {
  dist: string
}

const config = JSON.parse(process.env.STEREOS_WORKER ?? 'null') as WorkerConfig | null
if (!config?.dist) throw new Error('worker-entry.js: STEREOS_WORKER is not set (the stereos pool starts this file)')
delete process.env.STEREOS_WORKER

interface WorkerModule {
  init(options: Record<string, unknown>): void
  runBaseTests(method: 'run' | 'collect', state: unknown, traces: unknown): Promise<void>
  setupEnvironment(context: unknown): Promise<() => Promise<void>>
}

/**
 * V8's compile cache, shared by the VM's worker processes: each file's process would otherwise
 * parse and compile Vitest anew, which takes seconds under TCG. It lives in the guest's /tmp,
 * made by this process (so owned by the test user, mode 0700): nothing crosses VMs, and the tests
 * can reach nothing they could not already change in their VM as that user (the project view's
 * upper layer). A directory of that name someone else owns is not used.
 */
function enableCompileCache(): void {
  const uid = process.getuid?.()
  const dir = join(tmpdir(), `stereos-compile-cache-${uid}`)
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 })
    const made = lstatSync(dir)
    if (!made.isDirectory() || made.uid !== uid) return
    module.enableCompileCache?.(dir)
  } catch {
    // Only a speed-up.
  }
}
enableCompileCache()

const worker = (await import(pathToFileURL(join(config.dist, 'worker.js')).href)) as WorkerModule
// Test files import `vitest` (externalized to this same dist): load it now, not on the file's time.
await import(pathToFileURL(join(config.dist, 'index.js')).href)
// Opened after the import: frames wait in the socket until init() can take them.
const channel = new Socket({ fd: 3, readable: true, writable: true })
const decoder = new V8Decoder()
const listeners = new Set<Listener>()

const pendingHostFs = new Map<number, { resolve: () => void; reject: (err: Error) => void }>()
let nextHostFs = 0
const hostFs: HostFs = {
  call: (request: HostFsOp) =>
    new Promise<void>((resolve, reject) => {
      const id = ++nextHostFs
      pendingHostFs.set(id, { resolve, reject })
      channel.write(encodeV8({ [HOST_FS_TAG]: 'request', id, request }))
    }),
}
;(globalThis as Record<string, unknown>)[HOST_FS_GLOBAL] = hostFs

channel.on('data', (chunk: Buffer) => {
  for (const message of decoder.push(chunk)) {
    if (isHostFsReply(message)) {
      const waiter = pendingHostFs.get(message.id)
      pendingHostFs.delete(message.id)
      if (message.error) waiter?.reject(new Error(message.error))
      else waiter?.resolve()
      continue
    }
    // Always deliver asynchronously: Vitest 4's init() registers its listener before its state exists.
    setImmediate(() => {
      for (const listener of listeners) listener(message)
    })
  }
})
// The host went away (pool stopped, VM reused by someone else): nothing left to do here.
channel.on('end', () => process.exit(0))
channel.on('error', () => process.exit(1))

worker.init({
  post: (message: unknown) => channel.write(encodeV8(message)),
  on: (listener: Listener) => listeners.add(listener),
  off: (listener: Listener) => listeners.delete(listener),
  teardown: () => channel.end(() => setImmediate(() => process.exit(0))),
  runTests: (state: unknown, traces: unknown) => worker.runBaseTests('run', state, traces),
  collectTests: (state: unknown, traces: unknown) => worker.runBaseTests('collect', state, traces),
  setup: worker.setupEnvironment,
})
