// First: on too old a Node, @stereos/harness would fail at import with an unrelated error.
import './node-check.js'
export { stereos, stereosPool, POOL_NAME } from './plugin.js'
export { describe, inSandbox } from './describe.js'
export type { SandboxSuiteFn } from './describe.js'
export { StereosOptions, SuiteSandboxOptions } from './options.js'
export type { StereosOptionsInput, ResolvedStereosOptions } from './options.js'
export { SUPPORTED as SUPPORTED_VITEST } from './version.js'
