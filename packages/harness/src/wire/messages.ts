/**
 * The agent's control messages: what the host may ask (ops), what the guest answers, and the
 * events it sends unasked. One table, checked on receipt by whichever side reads it.
 */
import { arrayOf, bool, literal, nullable, num, object, optional, recordOf, str, uint, type Check } from './check.js'
import { WireError } from './wire-error.js'

export const PROTOCOL_VERSION = 1
export const HELLO_MAGIC = 'stereos-harness/agent'
/** The agent listens here: vsock port in guests with vsock, TCP port otherwise (forwarded from 127.0.0.1). */
export const AGENT_PORT = 1025
/** The secret (inject_secret; agentd passes secrets as env) that carries the per-VM token. */
export const TOKEN_SECRET = 'STEREOS_HARNESS_TOKEN'

export const GuestUser = literal('agent', 'root')
export type GuestUser = 'agent' | 'root'

/** A numeric identity for a spawned process: no user name needed in the guest, never root. */
interface NumericUser {
  uid: number
  gid: number
}
/** Who a spawned process runs as: a named guest user, or a numeric uid/gid (no supplementary groups). */
export type SpawnUser = GuestUser | NumericUser

/** A uid other than 0: root is asked for by name (`'root'`), never by number. */
const nonRootUid: Check<number> = (v, p) => {
  const uid = uint(v, p)
  if (uid === 0) throw new WireError(`${p}: uid 0 is refused here (ask for user 'root' by name)`)
  return uid
}
const NumericUserCheck = object({ uid: nonRootUid, gid: uint })
const SpawnUserCheck: Check<SpawnUser> = (v, p) => (typeof v === 'string' ? GuestUser(v, p) : NumericUserCheck(v, p))

/** A nice value, as setpriority(2) takes it: an integer from -20 (highest priority) to 19. */
const Niceness: Check<number> = (v, p) => {
  if (Number.isInteger(v) && (v as number) >= -20 && (v as number) <= 19) return v as number
  throw new WireError(`${p}: expected an integer nice value from -20 to 19, got ${typeof v === 'number' ? v : typeof v}`)
}

export const HostHello = object({ magic: literal(HELLO_MAGIC), version: uint, token: str })
export type HostHello = ReturnType<typeof HostHello>

const AgentInfo = object({
  agentVersion: str,
  node: str,
  arch: str,
  pid: uint,
  /** The user the agent itself runs as. */
  user: str,
  /** Whether spawn/put can act as root (an agent started by agentd runs as `agent` and cannot). */
  root: bool,
  /** How the agent listens: `vsock` or `tcp`. */
  listen: str,
  /** The guest Node binary the agent runs on (guest processes may use it too). */
  execPath: str,
})
export type AgentInfo = ReturnType<typeof AgentInfo>

export const GuestHello = object({
  magic: literal(HELLO_MAGIC),
  version: uint,
  accepted: bool,
  reason: optional(str),
  info: optional(AgentInfo),
})
export type GuestHello = ReturnType<typeof GuestHello>

const FileKind = literal('file', 'dir', 'symlink')
export type FileKind = 'file' | 'dir' | 'symlink'

/** One entry of a tree to place, relative to its root; files name their content by sha256. */
const PlaceEntry = object({ path: str, kind: FileKind, mode: uint, hash: optional(str), target: optional(str) })
export type PlaceEntry = ReturnType<typeof PlaceEntry>

const ListEntry = object({ path: str, kind: FileKind, mode: uint, size: uint, target: optional(str) })
export type ListEntry = ReturnType<typeof ListEntry>

const Stat = object({ kind: literal('file', 'dir', 'symlink', 'other'), size: uint, mode: uint, mtimeMs: num })
export type GuestStat = ReturnType<typeof Stat>

const Empty = object({})

interface Op<A, R> {
  args: Check<A>
  result: Check<R>
}
const op = <A, R>(args: Check<A>, result: Check<R>): Op<A, R> => ({ args, result })

export const OPS = {
  /** Start a process; its stdio (and an optional extra fd 3 pipe, `ipc`) are channels the host opened. */
  spawn: op(
    object({
      ref: uint,
      cmd: str,
      args: arrayOf(str),
      env: optional(recordOf(str)),
      cwd: optional(str),
      user: optional(SpawnUserCheck),
      /** Start it through `setpriv --no-new-privs`: setuid programs (sudo) cannot raise its privileges. */
      noNewPrivs: optional(bool),
      /** Its nice value, set by the agent as it starts (only a root agent can go below its own). */
      nice: optional(Niceness),
      /**
       * A worker: it starts in a fresh cgroup of its own (before its program runs), which nothing
       * it starts can leave without root; `sweepWorkers` kills what is left in it.
       */
      worker: optional(bool),
      stdin: optional(uint),
      stdout: optional(uint),
      stderr: optional(uint),
      ipc: optional(uint),
    }),
    object({ pid: uint }),
  ),
  kill: op(object({ ref: uint, signal: str }), Empty),
  /** Set the nice value of a process this connection started (every thread of it). */
  renice: op(object({ ref: uint, nice: Niceness }), Empty),
  /**
   * SIGKILL every process whose real or effective uid is `uid`, except `keep` (a pid) and its
   * descendants: what earlier processes of that user left behind. Root agents only; never uid 0.
   */
  sweep: op(object({ uid: nonRootUid, keep: optional(uint) }), object({ killed: arrayOf(uint) })),
  /**
   * SIGKILL every process in the cgroup of every worker (spawned with `worker`) but `keep`'s (a
   * pid), whatever its uid, and remove those cgroups: what earlier workers left behind, root's
   * included. Kills nothing where the guest has no cgroup2 (workers then start without one).
   */
  sweepWorkers: op(object({ keep: optional(uint) }), object({ killed: arrayOf(uint) })),
  /** Which of these sha256 hashes the guest's content store lacks. */
  missing: op(object({ hashes: arrayOf(str, 1_000_000) }), object({ missing: arrayOf(str, 1_000_000) })),
  /** Receive one blob on `channel`; answered once it is verified and stored. */
  putBlob: op(object({ hash: str, size: uint, channel: uint }), Empty),
  /** Create a tree under `root` from stored blobs (directories first, then files and links). */
  place: op(object({ root: str, entries: arrayOf(PlaceEntry, 1_000_000), user: optional(GuestUser) }), Empty),
  /** Send one file's bytes on `channel`. */
  read: op(object({ path: str, channel: uint }), object({ size: uint, mode: uint })),
  /** A tree, recursively, paths relative to `path`. */
  list: op(object({ path: str }), object({ entries: arrayOf(ListEntry, 1_000_000) })),
  stat: op(object({ path: str }), object({ stat: nullable(Stat) })),
  mkdir: op(object({ path: str, mode: optional(uint), user: optional(GuestUser) }), Empty),
  remove: op(object({ path: str }), Empty),
  /**
   * The guest was restored from a template: step its clock to the host's and mix host randomness
   * into its pool. Only a root agent can; `clockSet` says whether it did.
   */
  resync: op(object({ epochMs: num, entropy: str }), object({ clockSet: bool, reason: optional(str) })),
} satisfies Record<string, Op<unknown, unknown>>

export type OpName = keyof typeof OPS
export type OpArgs<K extends OpName> = ReturnType<(typeof OPS)[K]['args']>
export type OpResult<K extends OpName> = ReturnType<(typeof OPS)[K]['result']>

export const ExitEvent = object({ ref: uint, code: nullable(num), signal: nullable(str), error: optional(str) })
export type ExitEvent = ReturnType<typeof ExitEvent>

export const EVENTS = { exit: ExitEvent } satisfies Record<string, Check<unknown>>
export type EventName = keyof typeof EVENTS
export type EventData<K extends EventName> = ReturnType<(typeof EVENTS)[K]>

/** The envelope of every MESSAGE frame. */
export const Envelope = object({
  kind: literal('request', 'response', 'event'),
  id: optional(uint),
  op: optional(str),
  name: optional(str),
  ok: optional(bool),
  body: (v) => v,
  error: optional(object({ code: str, message: str, fix: optional(str) })),
})
export type Envelope = ReturnType<typeof Envelope>
