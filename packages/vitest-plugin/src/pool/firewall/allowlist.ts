import { z } from 'zod'

/**
 * The one table of what a guest worker may ask of the host through Vitest's RPC. Vitest's own
 * host handlers (`createMethodsRPC`) trust their worker: some read or write host files named in
 * their arguments (`writeBenchmarkResult`, `readBenchmarkResult`, `fetch` of any path,
 * `ensureModuleGraphEntry` plus a stack naming a host file). The guest is untrusted, so every
 * call is parsed here before Vitest sees it: a method not in this table is refused, its
 * arguments must match the schema (a fresh array comes out: no array-likes, no extra fields on
 * the frame), and `check` holds what a schema cannot say (paths inside the project view, test
 * files the pool itself sent this worker). `reply` says what is checked on Vitest's answer.
 */

/** What a rule's check may consult: the worker's own state, decided by the host. */
export interface CallScope {
  /** Whether a path names a test file the pool sent this worker in `run`/`collect` (absolute, or relative to the project root, as coverage metadata names them). */
  ownFile(path: string): boolean
  /** Whether a module id or file path (query, `file://`, `/@fs/` stripped) may be read through Vitest: inside the view, or naming no host file. */
  mayRead(id: string): boolean
}

export interface MethodRule {
  /** The Vitest majors whose worker calls it. */
  readonly vitest: readonly (4 | 5)[]
  /** The arguments, as a tuple (trailing optional elements may be absent). */
  readonly args: z.ZodType<unknown[]>
  /** Why the parsed arguments are refused, if they are. */
  readonly check?: (args: never, scope: CallScope) => string | undefined
  /**
   * On Vitest's answer: `confine` refuses modules whose file lies outside the view (their code
   * would reach the guest); `snapshot-path` makes the answered path writable for this worker.
   * Error answers are scrubbed for every method.
   */
  readonly reply?: 'confine' | 'snapshot-path'
}

const KiB = 1024
const MiB = 1024 * KiB
/** Module ids, file paths and URLs. */
const Id = z.string().max(8 * KiB)
/** A Vite environment name (`ssr`, `client`, `__vitest__`, a user's own). */
const Environment = z.string().regex(/^[\w$.-]{1,128}$/)
/** Task ids Vitest makes (`<hash>_<n>_<n>…`). */
const TaskId = z.string().max(1 * KiB)
const Files = z.array(Id).max(100_000)
/** OpenTelemetry context carried by v5's fetch. */
const Carrier = z.record(z.string().max(KiB), z.string().max(8 * KiB)).optional()
/** Vitest's `File` task: the fields the host keys on; the rest is data for reporters. */
const FileTask = z.looseObject({ filepath: Id, id: TaskId, name: z.string().max(64 * KiB) })
/** One `[id, result, meta]` of onTaskUpdate. */
const TaskPack = z.tuple([TaskId, z.looseObject({}).optional().nullable(), z.looseObject({}).optional().nullable()])
const TaskEvent = z.tuple([TaskId, z.string().max(64), z.unknown().optional()])
const Location = z.looseObject({ file: Id, line: z.number(), column: z.number() })
/** An attachment's inline body is bounded again by the pool (attachmentMaxBytes). */
const Attachment = z.looseObject({
  path: Id.optional(),
  body: z.union([z.string(), z.instanceof(Uint8Array)]).optional(),
  bodyEncoding: z.enum(['base64', 'utf-8']).optional(),
  contentType: z.string().max(256).optional(),
})
/**
 * Test artifacts: annotations and a test's own `recordArtifact` types. Vitest's other internal
 * types are refused: `internal:browserTrace` makes the host read source maps of files its
 * entries name.
 */
const Artifact = z.union([
  z.looseObject({
    type: z.literal('internal:annotation'),
    annotation: z.looseObject({ message: z.string().max(64 * KiB), type: z.string().max(256), attachment: Attachment.optional() }),
    location: Location.optional(),
  }),
  z.looseObject({
    type: z
      .string()
      .max(256)
      .refine((type) => !type.startsWith('internal:'), "Vitest's internal artifact types other than annotations are not accepted from the guest"),
    attachments: z.array(Attachment).max(1000).optional(),
    location: Location.optional(),
  }),
])
const ConsoleLog = z.looseObject({
  content: z
    .string()
    .max(64 * MiB)
    .optional(),
  type: z.enum(['stdout', 'stderr']),
  taskId: TaskId.optional(),
  time: z.number(),
  size: z.number(),
  origin: z
    .string()
    .max(64 * KiB)
    .optional(),
})
const CoverageMeta = z.looseObject({ coverage: z.unknown(), testFiles: Files, environment: z.string().max(KiB), projectName: z.string().max(KiB).optional() })

const both = [4, 5] as const
const v5 = [5] as const

/** Refused unless every path is the worker's own test file. */
const ownFiles = (files: readonly string[], scope: CallScope) => {
  const other = files.find((f) => !scope.ownFile(f))
  return other === undefined ? undefined : `${other} is not a test file the pool sent this worker`
}
const readable = (ids: readonly (string | undefined)[], scope: CallScope) => {
  const bad = ids.find((id) => id !== undefined && !scope.mayRead(id))
  return bad === undefined ? undefined : `${bad} is outside the project view`
}

function rule<A extends unknown[]>(r: {
  vitest: readonly (4 | 5)[]
  args: z.ZodType<A>
  check?: (args: A, scope: CallScope) => string | undefined
  reply?: MethodRule['reply']
}): MethodRule {
  return r as unknown as MethodRule
}

export const ALLOWED: Readonly<Record<string, MethodRule>> = {
  // Module loading: ids that name a host file must lie in the view; replies are confined too.
  fetch: rule({
    vitest: both,
    args: z.tuple([Id, Id.optional(), Environment, z.looseObject({}).optional(), Carrier]),
    check: ([url, importer], scope) => readable([url, importer], scope),
    reply: 'confine',
  }),
  resolve: rule({
    vitest: both,
    args: z.tuple([Id, Id.optional(), Environment]),
    check: ([id, importer], scope) => readable([id, importer], scope),
    reply: 'confine',
  }),
  fetchWarmModules: rule({ vitest: v5, args: z.tuple([Environment, Files]), check: ([, files], scope) => ownFiles(files, scope), reply: 'confine' }),
  prewarmModuleGraph: rule({ vitest: v5, args: z.tuple([Environment, Files]), check: ([, files], scope) => ownFiles(files, scope), reply: 'confine' }),
  ensureModuleGraphEntry: rule({ vitest: both, args: z.tuple([Id, Id]), check: (ids, scope) => readable(ids, scope) }),
  // Snapshots: only the pool's own files name snapshot paths, so only theirs become writable.
  resolveSnapshotPath: rule({ vitest: both, args: z.tuple([Id]), check: (files, scope) => ownFiles(files, scope), reply: 'snapshot-path' }),
  snapshotSaved: rule({ vitest: both, args: z.tuple([z.looseObject({ filepath: Id })]) }),
  // Results: reports are data; the pool scrubs stacks so the host reads no file outside the view.
  onQueued: rule({ vitest: both, args: z.tuple([FileTask]), check: ([file], scope) => ownFiles([file.filepath], scope) }),
  onCollected: rule({
    vitest: both,
    args: z.tuple([z.array(FileTask).max(10_000)]),
    check: ([files], scope) =>
      ownFiles(
        files.map((f) => f.filepath),
        scope,
      ),
  }),
  onTaskUpdate: rule({ vitest: both, args: z.tuple([z.array(TaskPack).max(100_000), z.array(TaskEvent).max(100_000)]) }),
  onTaskArtifactRecord: rule({
    vitest: both,
    args: z.tuple([TaskId, Artifact]),
    check: ([, artifact], scope) => readable([artifact.location?.file], scope),
  }),
  onUserConsoleLog: rule({ vitest: both, args: z.tuple([ConsoleLog]) }),
  onUnhandledError: rule({ vitest: both, args: z.tuple([z.unknown(), z.string().max(KiB)]) }),
  onAsyncLeaks: rule({ vitest: both, args: z.tuple([z.array(z.looseObject({})).max(10_000)]) }),
  onTestModuleDependencies: rule({
    vitest: v5,
    args: z.tuple([Id, Files]),
    check: ([file, deps], scope) => ownFiles([file], scope) ?? readable(deps, scope),
  }),
  onAfterSuiteRun: rule({ vitest: both, args: z.tuple([CoverageMeta]), check: ([meta], scope) => ownFiles(meta.testFiles, scope) }),
  onTestBenchmark: rule({ vitest: v5, args: z.tuple([TaskId, z.looseObject({})]) }),
  // bail: the worker asks how many tests failed, and cancels the run when it is reached.
  getCountOfFailedTests: rule({ vitest: both, args: z.tuple([]) }),
  onCancel: rule({ vitest: both, args: z.tuple([z.literal('test-failure')]) }),
}

/** Methods Vitest has that a guest worker may not call, and why (the refusal says so). */
export const REFUSED: Readonly<Record<string, string>> = {
  transform: "only Vitest's vm pools use it, and it transforms any file the id names",
  readBenchmarkResult: 'it reads a host file the guest names; benchmark comparisons are not supported under the stereos pool',
  writeBenchmarkResult: 'it writes a host file the guest names; benchmark output files are not supported under the stereos pool',
}
