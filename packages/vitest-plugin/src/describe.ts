import { describe as vitestDescribe, type SuiteAPI, type SuiteCollector, type SuiteFactory } from 'vitest'
import type { SuiteSandboxOptions } from './options.js'

/**
 * What `meta.stereos` of a sandboxed suite carries into reports (JSON, blob, HTML): the options,
 * with the names of secrets and env variables but never env values (secrets are only names:
 * their values live in the project's stereos() options).
 */
export type SandboxMeta = Omit<SuiteSandboxOptions, 'secrets' | 'env'> & { sandbox: true; secrets?: string[]; env?: string[] }

declare module 'vitest' {
  interface TaskMeta {
    /** Set by describe.sandbox: the suite runs in a stereOS VM with these options. */
    stereos?: SandboxMeta
  }
}

export interface SandboxSuiteFn {
  (name: string, fn?: SuiteFactory): SuiteCollector
  (name: string, options: SuiteSandboxOptions, fn?: SuiteFactory): SuiteCollector
}

/** Whether this file runs in a guest worker of the stereos pool (the pool sets it). */
export function inSandbox(): boolean {
  return process.env.STEREOS_SANDBOX === '1'
}

const SKIP_REASON = 'describe.sandbox suites run only in a stereOS VM: run with `vitest --pool=stereos` and the stereos() plugin in the Vitest config'

/** Reports keep what was asked for, not the values: a secret in `meta` would land in every JSON and blob report. */
export function sandboxMeta(options: SuiteSandboxOptions): SandboxMeta {
  const { secrets, env, ...rest } = options
  return {
    ...rest,
    ...(secrets ? { secrets: [...new Set(secrets)].sort() } : {}),
    ...(env ? { env: Object.keys(env).sort() } : {}),
    sandbox: true,
  }
}

const sandbox: SandboxSuiteFn = (name: string, optionsOrFn?: SuiteSandboxOptions | SuiteFactory, maybeFn?: SuiteFactory) => {
  const options = typeof optionsOrFn === 'function' ? {} : (optionsOrFn ?? {})
  const fn = typeof optionsOrFn === 'function' ? optionsOrFn : maybeFn
  const meta = { stereos: sandboxMeta(options) }
  if (inSandbox()) return vitestDescribe(name, { meta }, fn)
  // Under any other pool the suite and its tests stay visible, skipped, with the reason in the name.
  return vitestDescribe.skip(`${name} (skipped: ${SKIP_REASON})`, { meta }, fn)
}

/** Vitest's `describe`, plus `describe.sandbox(name, options?, fn)`. */
export const describe = Object.assign(vitestDescribe, { sandbox }) as SuiteAPI & { sandbox: SandboxSuiteFn }
