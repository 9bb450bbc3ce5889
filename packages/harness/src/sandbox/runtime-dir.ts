import { mkdirSync } from 'node:fs'
import { resolve } from 'node:path'
import type { LogSink } from '../log.js'
import { defaultRuntimeDir, sweepOrphans } from '../vmm/vm-dir.js'

// Once-per-process cache: orphans are swept the first time a runtime dir is used, not per boot.
const sweptDirs = new Set<string>()

/** The runtime dir (created 0700), swept once per process of VM dirs whose runner died. */
export function prepareRuntimeDir(configured: string | undefined, log: LogSink): string {
  const runtimeDir = resolve(configured ?? defaultRuntimeDir())
  mkdirSync(runtimeDir, { recursive: true, mode: 0o700 })
  if (!sweptDirs.has(runtimeDir)) {
    sweptDirs.add(runtimeDir)
    const swept = sweepOrphans(runtimeDir)
    if (swept.removed.length) log(`removed ${swept.removed.length} VM dir(s) left by runners that died (killed QEMU: ${swept.killed.join(', ') || 'none'})`)
  }
  return runtimeDir
}
