import { HarnessError, HostPorts, NetworkFields, refuseHostPortsWithoutNetwork, SandboxOptions } from '@stereos/harness'
import type { ProvidedContext } from 'vitest'
import { z } from 'zod'

/** Environment variable names as POSIX shells and agentd's env tables accept them. */
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/
/** One line, no NUL: values travel through jcards and tmux `-e` flags on stereOS, where a newline splits them. */
const EnvValue = z
  .string()
  .refine((v) => !/[\n\r\0]/.test(v), 'must be one line without NUL (a newline would split it in the guest: pass multi-line data as a file)')

const EnvVars = z.record(z.string(), EnvValue).superRefine((env, ctx) => {
  for (const key of Object.keys(env)) {
    if (!ENV_NAME.test(key)) ctx.addIssue({ code: 'custom', path: [key], message: 'must be a variable name (letters, digits, _; not starting with a digit)' })
  }
})

/** What a hostPorts function is given: the values globalSetup gave `project.provide()` (typed by your `declare module 'vitest'`). */
export interface HostPortsContext {
  provided: ProvidedContext
}

/** Called each time a VM is leased (after globalSetup), so a port picked at run time can be declared. */
export type HostPortsFunction = (context: HostPortsContext) => readonly number[] | Promise<readonly number[]>

/**
 * The plugin's network: as Sandbox.boot's, but hostPorts may also be a function (the pool calls
 * it when it leases a VM and checks its answer like a list).
 */
const PluginNetwork = z
  .strictObject({
    ...NetworkFields,
    hostPorts: z
      .union([HostPorts, z.custom<HostPortsFunction>((value) => typeof value === 'function', 'expected a list of ports or a function returning one')])
      .default([]),
  })
  .superRefine(refuseHostPortsWithoutNetwork)

/** Captures per run: each is tens of MB and seconds; the first failures are the ones to read. */
export const DEFAULT_CAPTURE_LIMIT = 3

const CaptureWhen = z.enum(['never', 'on-failure'])
/** `'on-failure'`, or `{ when, dir, limit }`; resolved to the object. */
const Capture = z.union([
  CaptureWhen.transform((when): { when: typeof when; dir?: string; limit: number } => ({ when, limit: DEFAULT_CAPTURE_LIMIT })),
  z.strictObject({ when: CaptureWhen.default('on-failure'), dir: z.string().min(1).optional(), limit: z.int().positive().default(DEFAULT_CAPTURE_LIMIT) }),
])
export type CaptureOption = z.output<typeof Capture>

/** 64 MiB: a log or a screenshot fits; a runaway file does not become host memory. */
export const DEFAULT_ATTACHMENT_MAX_BYTES = 64 * 1024 ** 2

/**
 * Options of `stereos(options)`, the project's (trusted) config: every Sandbox option
 * (mixtape, arch, resources, network, secrets, shared, timeouts, keepOnFailure) plus how test
 * files are isolated and what reaches the guest. One zod schema is the source of the types.
 */
export const StereosOptions = SandboxOptions.extend({
  network: PluginNetwork.default({ mode: 'nat', forwards: [], hostPorts: [] }),
  /**
   * `process` (default): each test file gets a fresh guest Node process in a warm, reused VM.
   * `vm`: each test file gets a fresh VM (slower; nothing carries over between files).
   */
  isolation: z.enum(['process', 'vm']).default('process'),
  /**
   * The pool lays out the project view as root in the guest, so its agent starts over SSH as
   * admin with sudo (every stereOS mixtape allows it); `agentd` agents run as `agent` and cannot.
   */
  bootstrap: z.enum(['ssh', 'agentd']).default('ssh'),
  /** Variables the guest test processes get on top of Vitest's own and `test.env`; nothing else of the host's environment reaches the guest. */
  env: EnvVars.default({}),
  /**
   * `on-failure`: the VM a test file failed in keeps running after Vitest exits, and the run
   * prints how to enter it (`stereos-harness ssh <id>`; `kept` lists, `stop` ends them). Its VMs
   * are booted detachable, so one left by a killed run is reaped by the next boot, not at once.
   */
  keepVm: z.enum(['never', 'on-failure']).default('never'),
  /**
   * `on-failure`: the VM a test file failed in is saved, once the file is done, into one file
   * (`<file>-<vm>.stcap`) that `stereos-harness debug` reopens on any machine (README "Capturing
   * a failing VM"). `dir`: where (default: beside Vitest's `outputFile`, else
   * `<root>/.vitest/stereos-captures`); `limit`: captures per run (later failures are not captured).
   */
  capture: Capture.default({ when: 'never', limit: DEFAULT_CAPTURE_LIMIT }),
  /**
   * Who the guest's test processes run as. `unprivileged` (default): the host user's uid/gid, or
   * a dedicated uid/gid (64000 and up) when the host user is root or its uid or gid is one the
   * image names (stereOS's `admin`, 1000, has sudo); never root, never in a group, no_new_privs.
   * `root`: root, for suites that must administer the guest (a test file then controls the VM).
   */
  testUser: z.enum(['unprivileged', 'root']).default('unprivileged'),
  /** Files tests attach inside the guest are read from the guest, up to this many bytes each. */
  attachmentMaxBytes: z.int().positive().default(DEFAULT_ATTACHMENT_MAX_BYTES),
})
export type StereosOptionsInput = z.input<typeof StereosOptions>
export type ResolvedStereosOptions = z.output<typeof StereosOptions>

/** A hostPorts function's answer, checked as a list would be; `at` names the option in the error. */
export function parseHostPorts(answer: unknown, at: string): number[] {
  const result = HostPorts.safeParse(answer)
  if (result.success) return result.data
  const lines = result.error.issues.map((issue) => `  ${[at, ...issue.path.map(String)].join('.')}: ${issue.message}`)
  throw new HarnessError('INVALID_OPTIONS', `Invalid stereos options (what the hostPorts function returned):\n${lines.join('\n')}`, {
    fix: "return an array of TCP ports (1–65535) on the host's 127.0.0.1, each once, from stereos({ network: { hostPorts } })",
  })
}

/**
 * Options of `describe.sandbox(name, options)`: only the shape of the file's guest. Test files
 * are untrusted (a pull request from a fork), so nothing here may reach the host: no host paths
 * (shared, runtimeDir, mixtape directories, qemuBinary), no host ports (network.forwards), no
 * host values (process.env; secrets are only named, their values come from the config), no host
 * services (network.hostPorts), and no
 * arch (it picks the host's QEMU binary). Strict: any other key is refused, naming it. Fields
 * have no defaults: what a file leaves out is the project's.
 */
export const SuiteSandboxOptions = z
  .strictObject({
    resources: SandboxOptions.shape.resources.unwrap().partial(),
    isolation: z.enum(['process', 'vm']),
    network: z.strictObject({ mode: z.enum(['nat', 'none']) }).partial(),
    bootTimeoutMs: z.int().positive(),
    agentTimeoutMs: z.int().positive(),
    /** Literal values the test file wrote itself (the guest could set them anyway). */
    env: EnvVars,
    /** Names of the project's `stereos({ secrets })`: the file's VM gets only these. */
    secrets: z.array(z.string().min(1)),
  })
  .partial()
export type SuiteSandboxOptions = z.input<typeof SuiteSandboxOptions>

export function parseStereosOptions(input: unknown, root: string): ResolvedStereosOptions {
  const result = StereosOptions.safeParse(input ?? {})
  if (result.success) return result.data
  const lines = result.error.issues.map((issue) => `  ${[root, ...issue.path.map(String)].join('.')}: ${issue.message}`)
  throw new HarnessError('INVALID_OPTIONS', `Invalid stereos options:\n${lines.join('\n')}`, {
    fix: 'correct the option(s) named above; see the Vitest pool section of the README',
  })
}
