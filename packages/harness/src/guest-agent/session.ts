import type { Duplex } from 'node:stream'
import { HarnessError } from '../errors.js'
import { helloAsGuest } from '../wire/hello.js'
import type { AgentInfo, OpArgs, OpName, OpResult } from '../wire/messages.js'
import { WirePeer } from '../wire/peer.js'
import { absolute, list, makeDir, place, readInto, remove, statPath } from './files.js'
import { identityFor } from './identity.js'
import { ProcessTable } from './processes.js'
import { resync } from './resync.js'
import { sweep } from './sweep.js'
import type { BlobStore } from './store.js'
import type { WorkerCgroups } from './worker-cgroups.js'

export interface SessionContext {
  /** The VM's token, read when a host connects: undefined until it is injected (see main.ts). */
  token: () => string | undefined
  info: AgentInfo
  store: BlobStore
  helloTimeoutMs: number
  /** Who processes and files belong to when the agent runs as root and no user is asked for. */
  defaultUser: string
  /** The cgroups of worker processes, shared by every connection (a sweep reaches earlier connections' workers). */
  workerCgroups: WorkerCgroups
  log: (line: string) => void
  /** Refused hellos: anyone in the guest can cause them, so this log is rate-limited (log-limit.ts). */
  logRefusal: (line: string) => void
}

type Handlers = { [K in OpName]: (args: OpArgs<K>, peer: WirePeer) => Promise<OpResult<K>> }

/** One host connection: hello, then ops until the host hangs up. */
export async function serveConnection(socket: Duplex, ctx: SessionContext): Promise<void> {
  let handshake
  try {
    handshake = await helloAsGuest(socket, ctx.token(), ctx.info, ctx.helloTimeoutMs)
  } catch (err) {
    ctx.logRefusal(`refused a connection: ${(err as Error).message.split('\n')[0]}`)
    socket.end()
    setTimeout(() => socket.destroy(), 1000).unref()
    return
  }
  const processes = new ProcessTable(ctx.workerCgroups)
  const handlers: Handlers = {
    spawn: (args, peer) => processes.spawn(peer, args, identityFor(args.user, ctx.defaultUser)),
    kill: async (args) => {
      processes.kill(args.ref, args.signal)
      return {}
    },
    renice: async ({ ref, nice }) => {
      processes.renice(ref, nice)
      return {}
    },
    sweep: async ({ uid, keep }) => ({ killed: await sweep(uid, keep) }),
    sweepWorkers: async ({ keep }) => ({ killed: await ctx.workerCgroups.sweep(keep) }),
    missing: async ({ hashes }) => ({ missing: hashes.filter((hash) => !ctx.store.has(hash)) }),
    putBlob: async ({ hash, size, channel }, peer) => {
      await ctx.store.put(hash, size, peer.channel(channel).readOnly())
      return {}
    },
    place: async ({ root, entries, user }) => {
      await place(ctx.store, root, entries, identityFor(user, ctx.defaultUser))
      return {}
    },
    read: async ({ path, channel }, peer) => {
      const sink = peer.channel(channel)
      const opened = await readInto(path, sink).catch((err: unknown) => {
        sink.reset((err as Error).message)
        throw err
      })
      opened.done.catch((err: unknown) => sink.reset((err as Error).message))
      return { size: opened.size, mode: opened.mode }
    },
    list: async ({ path }) => ({ entries: await list(path) }),
    stat: async ({ path }) => ({ stat: await statPath(path) }),
    mkdir: async ({ path, mode, user }) => {
      await makeDir(absolute(path), mode, identityFor(user, ctx.defaultUser))
      return {}
    },
    remove: async ({ path }) => {
      await remove(path)
      return {}
    },
    resync: (args) => resync(args),
  }
  const peer = new WirePeer(
    socket,
    {
      onRequest: (op, args, p) => {
        const handler = handlers[op] as (a: unknown, p: WirePeer) => Promise<unknown>
        if (!handler) return Promise.reject(new HarnessError('PROTOCOL', `unknown op ${op}`))
        return handler(args, p)
      },
      onClose: (err) => {
        processes.killAll(ctx.log)
        if (err && !(err instanceof HarnessError && err.code === 'AGENT_UNREACHABLE')) ctx.log(`connection closed: ${err.message.split('\n')[0]}`)
      },
    },
    handshake.leftover,
    handshake.decoder,
  )
  socket.resume()
  await peer.closed
}
