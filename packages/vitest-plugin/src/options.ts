import { HarnessError, SandboxOptions } from '@stereos/harness'
import { z } from 'zod'

/**
 * Options of `stereos(options)` and `describe.sandbox(name, options)`: every Sandbox option
 * (mixtape, arch, resources, network, secrets, shared, bootstrap, timeouts, keepOnFailure) plus
 * how test files are isolated. One zod schema is the source of the types.
 */
export const StereosOptions = SandboxOptions.extend({
  /**
   * `process` (default): each test file gets a fresh guest Node process in a warm, reused VM.
   * `vm`: each test file gets a fresh VM (slower; nothing carries over between files).
   */
  isolation: z.enum(['process', 'vm']).default('process'),
})
export type StereosOptionsInput = z.input<typeof StereosOptions>
export type ResolvedStereosOptions = z.output<typeof StereosOptions>

/** Per-suite options accepted by describe.sandbox: what can differ per file. */
export const SuiteSandboxOptions = StereosOptions.partial()
export type SuiteSandboxOptions = z.input<typeof SuiteSandboxOptions>

export function parseStereosOptions(input: unknown, root: string): ResolvedStereosOptions {
  const result = StereosOptions.safeParse(input ?? {})
  if (result.success) return result.data
  const lines = result.error.issues.map((issue) => `  ${[root, ...issue.path.map(String)].join('.')}: ${issue.message}`)
  throw new HarnessError('INVALID_OPTIONS', `Invalid stereos options:\n${lines.join('\n')}`, {
    fix: 'correct the option(s) named above; see the Vitest pool section of the README',
  })
}
