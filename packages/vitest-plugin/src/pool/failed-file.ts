import { join, relative } from 'node:path'
import { pathToFileURL } from 'node:url'

/** The part of Vitest's `File` task a report needs for a file that never ran. */
export interface FailedFileTask {
  id: string
  name: string
  fullName: string
  type: 'suite'
  mode: 'run'
  filepath: string
  tasks: []
  meta: Record<string, unknown>
  projectName: string | undefined
  file: FailedFileTask | undefined
  pool: string
  result: { state: 'fail'; errors: SerializedError[] }
}

export interface SerializedError {
  name: string
  message: string
  stack: string
  code?: string
}

type FileHash = (file: string, projectName: string | undefined) => string

/**
 * The running Vitest's own file-id hash (`vitest/node` exports it in 4.1 and 5; the formula
 * differs between them), so a file reported here has the id a worker would have given it:
 * reporters, blob shards and --merge-reports match files by it.
 */
export async function fileHashOf(distPath: string): Promise<FileHash> {
  const node = (await import(pathToFileURL(join(distPath, 'node.js')).href)) as { generateFileHash?: FileHash }
  if (typeof node.generateFileHash !== 'function') throw new Error(`stereos: ${distPath}/node.js has no generateFileHash (an unsupported Vitest)`)
  return node.generateFileHash
}

/**
 * An error as Vitest's worker would send it. The stack holds no frames: they would point into
 * this pool, not at the user's code; the message names the file, the cause and the fix.
 */
export function serializeError(err: unknown): SerializedError {
  const e = err instanceof Error ? err : new Error(String(err))
  const code = (e as { code?: unknown }).code
  return { name: e.name, message: e.message, stack: `${e.name}: ${e.message}`, ...(typeof code === 'string' ? { code } : {}) }
}

/**
 * A File task that failed before it ran, as the worker reports an import error: state `fail`,
 * no tests, the error on the file. Sent through onQueued/onCollected/onTaskUpdate with the
 * `suite-failed-early` event, it shows in the summary, JSON, junit and blob reports like a
 * syntax error does.
 */
export function failedFileTask(filepath: string, root: string, projectName: string | undefined, hash: FileHash, error: SerializedError): FailedFileTask {
  const name = relative(root, filepath)
  const task: FailedFileTask = {
    id: hash(name, projectName),
    name,
    fullName: name,
    type: 'suite',
    mode: 'run',
    filepath,
    tasks: [],
    meta: {},
    projectName,
    file: undefined,
    pool: 'stereos',
    result: { state: 'fail', errors: [error] },
  }
  task.file = task
  return task
}

/** The worker→host calls that report `task` as a failed file, in the order a worker makes them. */
export function failedFileCalls(task: FailedFileTask, method: 'run' | 'collect'): [string, unknown[]][] {
  const calls: [string, unknown[]][] = []
  if (method === 'run') calls.push(['onQueued', [task]])
  calls.push(['onCollected', [[task]]])
  calls.push(['onTaskUpdate', [[[task.id, task.result, task.meta]], [[task.id, 'suite-failed-early', undefined]]]])
  return calls
}
