import { lstatSync } from 'node:fs'
import { resolve } from 'node:path'
import { HarnessError } from '@stereos/harness'
import { z } from 'zod'
import { HOST_FS_TAG, type HostFsRequest } from '../../shared/host-fs.js'
import { insideView, moduleFile, outsideView } from '../confine.js'
import { ALLOWED, type CallScope, REFUSED } from './allowlist.js'
import { type InView, scrubGuestValue, scrubHostError } from './scrub.js'

/** A birpc call as the pool forwards it to Vitest: a fresh frame, the pool's own id. */
export interface Call {
  t: 'q'
  m: string
  a: unknown[]
  i?: string
}

/** What one message from the guest turned into. */
export type FromGuest =
  /** A checked call, to go on to Vitest once the pool has done its part (attachments, coverage, VM logs). */
  | { kind: 'call'; call: Call }
  /** The guest worker's answer to a lifecycle request (`started`, `stopped`, `testfileFinished`). */
  | { kind: 'worker'; response: WorkerResponse }
  /** A snapshot write for the host (pool/host-writes.ts decides it). */
  | { kind: 'host-fs'; request: HostFsRequest }
  /** The guest's answer to a call Vitest made to it. */
  | { kind: 'reply'; reply: Reply }
  /** Refused: answered to the guest when it waits for an answer, and nothing reaches Vitest. */
  | { kind: 'refused'; why: string }

export interface Reply {
  t: 's'
  i: string
  r?: unknown
  e?: unknown
}

const WorkerResponse = z.strictObject({
  __vitest_worker_response__: z.literal(true),
  type: z.enum(['started', 'stopped', 'testfileFinished']),
  error: z.unknown().optional(),
  usedMemory: z.number().optional(),
})
export type WorkerResponse = z.infer<typeof WorkerResponse>

const HostFs = z.strictObject({
  [HOST_FS_TAG]: z.literal('request'),
  id: z.int().nonnegative(),
  request: z.discriminatedUnion('op', [
    z.strictObject({ op: z.literal('write'), path: z.string().max(8192), data: z.string().max(256 * 1024 ** 2) }),
    z.strictObject({ op: z.literal('remove'), path: z.string().max(8192) }),
  ]),
})

/** birpc ids Vitest's worker makes (nanoid, 21 characters); anything longer is not one. */
const GuestId = z.string().min(1).max(64)
const Frame = z.looseObject({ t: z.enum(['q', 's']), m: z.string().max(256).optional(), i: z.unknown().optional(), a: z.unknown().optional() })

export interface FirewallOptions {
  /** The host dirs the guest sees (real paths). */
  viewRoots: readonly string[]
  /** The project root: relative test file names (coverage metadata) resolve from it. */
  projectRoot: string
  /** The running Vitest's major version (the allowlist differs). */
  vitestMajor: 4 | 5
  /** Frames for Vitest (the pool's own calls). */
  toVitest(call: Call): void
  /** Frames for the guest (answers to refused calls). */
  toGuest(reply: Reply): void
  /** Told of each refusal (the pool logs it: a refusal is an attack, or a Vitest call this table lacks). */
  refused?(why: string): void
}

/**
 * The pool's side of Vitest's RPC with one guest worker. Vitest's birpc trusts its peer; the
 * guest is untrusted, so the pool owns the conversation: every guest message is parsed against
 * the allowlist (allowlist.ts), calls go to Vitest under ids the pool assigns (no guest id
 * reaches Vitest: a numeric, duplicate or missing id cannot confuse which reply is checked), and
 * every answer is checked and mapped back before the guest sees it. What the guest sends is
 * scrubbed of stack frames naming files outside the view, so the host reads none of them.
 */
export class RpcFirewall {
  /** Test files the pool sent this worker: the only files it may name as its own. */
  private readonly files = new Set<string>()
  /** The same, for the host writes that concern them (inline snapshots). */
  readonly testFiles: ReadonlySet<string> = this.files
  /** Guest calls in flight, by the pool's id. */
  private readonly pending = new Map<string, { guestId: string; method: string }>()
  private readonly guestIds = new Set<string>()
  /** Vitest's calls to the guest that expect an answer. */
  private readonly vitestCalls = new Set<string>()
  /** The pool's own calls to Vitest, answered through fromVitest. */
  private readonly own = new Map<string, () => void>()
  private next = 0
  /** Snapshot files Vitest resolved for this worker's own test files: the only `.snap` paths it may write. */
  readonly snapshotFiles = new Set<string>()
  private readonly inView: InView
  private readonly scope: CallScope

  constructor(private readonly options: FirewallOptions) {
    this.inView = (path) => insideView(path, options.viewRoots)
    this.scope = { ownFile: (path) => this.files.has(resolve(options.projectRoot, path)), mayRead: (id) => this.mayRead(id) }
  }

  /** A module id the guest asks Vitest to load: fine when it names no existing host file outside the view. */
  private mayRead(id: string): boolean {
    const file = moduleFile(id)
    if (!file || this.inView(file)) return true
    // Vite maps a path that is not a host file to the project root (`/src/a.ts`); the reply is confined.
    return lstatSync(file, { throwIfNoEntry: false }) === undefined
  }

  /** Vitest sent this worker these files (`run`/`collect`). */
  sent(files: readonly string[]): void {
    for (const file of files) this.files.add(file)
  }

  fromGuest(message: unknown): FromGuest {
    if (typeof message !== 'object' || message === null) return this.refuse(undefined, 'a message that is not an object')
    const record = message as Record<string, unknown>
    if ('__vitest_worker_response__' in record) {
      const response = WorkerResponse.safeParse(message)
      if (!response.success) return this.refuse(undefined, 'a malformed worker response')
      if (!scrubGuestValue(response.data.error, this.inView)) return this.refuse(undefined, 'a worker error too large to check')
      return { kind: 'worker', response: response.data }
    }
    if (HOST_FS_TAG in record) {
      const request = HostFs.safeParse(message)
      return request.success ? { kind: 'host-fs', request: request.data as HostFsRequest } : this.refuse(undefined, 'a malformed snapshot write')
    }
    const frame = Frame.safeParse(message)
    if (!frame.success) return this.refuse(undefined, 'a message that is neither an RPC call nor a reply')
    return frame.data.t === 's' ? this.guestReply(record) : this.guestCall(frame.data)
  }

  private guestReply(frame: Record<string, unknown>): FromGuest {
    const id = frame.i
    if (typeof id !== 'string' || !this.vitestCalls.has(id)) return this.refuse(undefined, 'a reply to no call of Vitest')
    this.vitestCalls.delete(id)
    const reply: Reply = { t: 's', i: id }
    if (frame.e !== undefined) {
      if (!scrubGuestValue(frame.e, this.inView)) return this.refuse(undefined, 'an error too large to check')
      reply.e = frame.e
    } else reply.r = frame.r
    return { kind: 'reply', reply }
  }

  private guestCall(frame: { m?: string; i?: unknown; a?: unknown }): FromGuest {
    const method = frame.m ?? '(none)'
    const rawId = frame.i
    if (rawId !== undefined && !GuestId.safeParse(rawId).success) return this.refuse(undefined, `a call of ${method} with an id that is not a birpc id`)
    const guestId = rawId as string | undefined
    if (guestId !== undefined && this.guestIds.has(guestId))
      return this.refuse(undefined, `a second call of ${method} with id ${guestId} while the first is in flight`)
    const rule = Object.hasOwn(ALLOWED, method) ? ALLOWED[method] : undefined
    if (!rule?.vitest.includes(this.options.vitestMajor)) {
      const why = Object.hasOwn(REFUSED, method) ? REFUSED[method] : `it is not one of the methods Vitest ${this.options.vitestMajor}'s worker calls`
      return this.refuse(guestId, `the guest may not call ${method}: ${why}`)
    }
    const args = rule.args.safeParse(frame.a)
    if (!args.success) {
      const issue = args.error.issues[0]
      return this.refuse(
        guestId,
        `the arguments of ${method} do not match what Vitest's worker sends (${issue ? `${issue.path.join('.') || 'arguments'}: ${issue.message}` : 'invalid'})`,
      )
    }
    const why = rule.check?.(args.data as never, this.scope)
    if (why) return this.refuse(guestId, `${method} refused: ${why}`)
    // The guest's own values go on, in a fresh array: zod's parse copies objects, and Vitest's
    // task trees are cyclic (a copied File would no longer be its tasks' `file`).
    const a = (frame.a as unknown[]).slice()
    if (!scrubGuestValue(a, this.inView)) return this.refuse(guestId, `the arguments of ${method} are too large or deep to check`)
    const call: Call = { t: 'q', m: method, a }
    if (guestId !== undefined) {
      call.i = `guest-${++this.next}`
      this.pending.set(call.i, { guestId, method })
      this.guestIds.add(guestId)
    }
    return { kind: 'call', call }
  }

  /** Refuse a guest message; a call that waits for an answer gets the reason as its error. */
  private refuse(answer: string | undefined, why: string): FromGuest {
    this.options.refused?.(why)
    if (answer !== undefined) {
      this.options.toGuest({
        t: 's',
        i: answer,
        e: new HarnessError('INVALID_OPTIONS', `stereos: ${why}`, {
          fix: "the stereos pool passes on only the calls Vitest's own worker makes, checked against the project view (see the README's security section)",
        }),
      })
    }
    return { kind: 'refused', why }
  }

  /**
   * A frame from Vitest: what the guest gets instead (undefined: nothing). Answers to guest calls
   * are checked and mapped back to the guest's id; answers to the pool's own calls end here.
   */
  fromVitest(message: unknown): unknown {
    const frame = message as { t?: unknown; i?: unknown; r?: unknown; e?: unknown }
    if (frame?.t === 'q') {
      if (typeof frame.i === 'string') this.vitestCalls.add(frame.i)
      return message
    }
    if (frame?.t !== 's') return message
    const id = String(frame.i)
    const own = this.own.get(id)
    if (own) {
      this.own.delete(id)
      own()
      return undefined
    }
    const call = this.pending.get(id)
    if (!call) return undefined
    this.pending.delete(id)
    this.guestIds.delete(call.guestId)
    return this.checkedReply(call.guestId, call.method, frame)
  }

  private checkedReply(guestId: string, method: string, frame: { r?: unknown; e?: unknown }): Reply {
    if (frame.e !== undefined) return { t: 's', i: guestId, e: scrubHostError(frame.e, this.inView, method) }
    const rule = ALLOWED[method]
    if (rule?.reply === 'confine') {
      const outside = outsideView(frame.r, this.options.viewRoots)
      if (outside) {
        return {
          t: 's',
          i: guestId,
          e: new HarnessError('INVALID_OPTIONS', `stereos: ${outside} is outside the project view, so the guest may not import it (${method})`, {
            fix: `the guest sees only ${this.options.viewRoots.join(', ')}; move the file into the project, or import it from a package installed there`,
          }),
        }
      }
    }
    if (rule?.reply === 'snapshot-path' && typeof frame.r === 'string') this.snapshotFiles.add(resolve(frame.r))
    return { t: 's', i: guestId, r: frame.r }
  }

  /** The pool refuses a call the firewall let through (an attachment it cannot read): the guest gets `error` as the answer. */
  answer(call: Call, error: unknown): void {
    const pending = call.i === undefined ? undefined : this.pending.get(call.i)
    if (!pending || call.i === undefined) return
    this.pending.delete(call.i)
    this.guestIds.delete(pending.guestId)
    this.options.toGuest({ t: 's', i: pending.guestId, e: error })
  }

  /** The pool's own call to Vitest (VM log annotations, a failed file's report); resolves on Vitest's answer. */
  call(method: string, args: unknown[]): Promise<void> {
    const i = `stereos-${++this.next}`
    return new Promise<void>((done) => {
      this.own.set(i, done)
      this.options.toVitest({ t: 'q', m: method, a: args, i })
    })
  }
}
