import { mkdirSync } from 'node:fs'
import { dirname, relative, resolve } from 'node:path'
import type { CaptureOption } from '../options.js'

/**
 * Where a run's captures go: `capture.dir`, else $STEREOS_CAPTURE_DIR, else beside the reports
 * Vitest writes (the first `outputFile`), else `<root>/.vitest/stereos-captures`; CI uploads them.
 */
export function captureDir(
  option: CaptureOption,
  config: { root: string; outputFile?: string | Partial<Record<string, string>> },
  env: NodeJS.ProcessEnv = process.env,
): string {
  if (option.dir) return resolve(config.root, option.dir)
  // The CI's choice (the setup-stereos action sets it, and uploads what lands there).
  if (env.STEREOS_CAPTURE_DIR) return resolve(config.root, env.STEREOS_CAPTURE_DIR)
  const output = typeof config.outputFile === 'string' ? config.outputFile : Object.values(config.outputFile ?? {}).find((f) => typeof f === 'string')
  return output ? resolve(config.root, dirname(output), 'stereos-captures') : resolve(config.root, '.vitest', 'stereos-captures')
}

/** A capture's file name: the test file's path relative to the root, flattened, and the VM. */
export function captureName(root: string, file: string, vmId: string): string {
  const rel = relative(root, file).replace(/^(\.\.\/)+/, '')
  return `${rel.replace(/[^A-Za-z0-9._-]+/g, '_')}-${vmId}.stcap`
}

/**
 * The run's captures, at most `limit`: a file's VM is captured when one of its tests fails first
 * (the path is known then, so the failure's report names it). Shared by the project's workers.
 */
export class CaptureBudget {
  private taken = 0
  private told = false

  constructor(
    private readonly option: CaptureOption,
    private readonly dir: () => string,
    private readonly log: (line: string) => void,
  ) {}

  get enabled(): boolean {
    return this.option.when === 'on-failure'
  }

  /** The path for this file's capture, or undefined: capture off, or the limit reached (said once). */
  reserve(root: string, file: string, vmId: string): string | undefined {
    if (!this.enabled) return undefined
    if (this.taken >= this.option.limit) {
      if (!this.told) this.log(`${this.option.limit} failing VMs captured (capture.limit); later failures in this run are not captured`)
      this.told = true
      return undefined
    }
    try {
      const dir = this.dir()
      mkdirSync(dir, { recursive: true })
      this.taken++
      return resolve(dir, captureName(root, file, vmId))
    } catch (err) {
      // The failure's report matters more than its capture.
      this.log(`cannot capture the VM of ${file}: ${(err as Error).message}`)
      return undefined
    }
  }
}
