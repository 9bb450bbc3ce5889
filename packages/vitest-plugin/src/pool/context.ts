import { createHash } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { planFromOptions, SandboxOptions, withHostPorts, type BootPlan, type KeptVm } from '@stereos/harness'
import type { ProvidedContext } from 'vitest'
import { parseHostPorts, type HostPortsFunction, type ResolvedStereosOptions } from '../options.js'
import { sandboxOptionsInFile } from './file-options.js'
import type { Lease, VmLeasePool } from './lease-pool.js'
import { overlay, suiteSandboxOptions } from './suite-options.js'
import type { ViewPlan } from './view.js'
import { SpareWorkers } from './warm-workers.js'

const FileResources = SandboxOptions.shape.resources.unwrap()

/**
 * The VM plan of parsed stereos() options (not parsed again): the pool's own keys left out, and
 * no host ports yet (the pool declares them when it leases a VM: withHostPorts).
 */
export function vmPlan(options: ResolvedStereosOptions): BootPlan {
  return planFromOptions({ ...options, network: { ...options.network, hostPorts: [] } })
}

/** How a file's VM is booted and what its guest processes get. */
export interface FilePlan {
  key: string
  /** What Sandbox.boot takes, with no network.hostPorts yet (declared when the VM is leased). */
  boot: BootPlan
  /** The project's options with the file's on top, resolved. */
  options: ResolvedStereosOptions
  hostPorts: readonly number[] | HostPortsFunction
}

/**
 * What every PoolWorker of one project shares: the project's options, the VM pool, the project
 * view, and how a test file's describe.sandbox options turn into the VM it runs in.
 */
export class PoolContext {
  private guestFiles: string | undefined
  /** Guest worker processes started ahead of their file, one per VM. */
  readonly spares = new SpareWorkers()

  constructor(
    readonly pool: VmLeasePool,
    /** The project's stereos() options, parsed once (stereosPool). */
    private readonly projectOptions: ResolvedStereosOptions,
    /** The host dirs the guest sees at the same paths (project, Vitest, this plugin). */
    readonly view: ViewPlan,
    /** The project's root, a real path: file snapshots are written back only under it. */
    readonly projectRoot: string,
    /** What globalSetup provided (project.getProvidedContext()): a hostPorts function's argument. */
    private readonly provided: () => Record<string, unknown> = () => ({}),
  ) {}

  /**
   * Options for these files: the project's, with the first file's describe.sandbox options on
   * top. Those set only the guest's shape (suite-options.ts refuses the rest, naming file and
   * line); a file that names secrets gets only those of the project's, one that names none all.
   */
  plan(files: string[]): FilePlan {
    const [file] = files
    const inFile = file ? sandboxOptionsInFile(file) : []
    const project = this.projectOptions
    const { secrets: named, ...shape } = file ? suiteSandboxOptions(file, inFile, Object.keys(project.secrets)) : {}
    // The file's options were checked above; only its sizes need resolving, against the project's.
    const options = overlay(project, { ...shape, ...(shape.resources ? { resources: FileResources.parse({ ...project.resources, ...shape.resources }) } : {}) })
    if (named) options.secrets = Object.fromEntries(named.map((name) => [name, project.secrets[name] as string]))
    // A file that asks for no network gets none: the project's host ports do not apply to it.
    if (shape.network?.mode === 'none') options.network = { ...options.network, hostPorts: [] }
    const { isolation, keepVm } = options
    const boot = vmPlan({ ...options, detachable: keepVm !== 'never' })
    // The key covers everything the VM was booted with; secrets are hashed in, never shown.
    const key = createHash('sha256').update(JSON.stringify({ isolation, boot })).digest('hex')
    return { key, boot, options, hostPorts: options.network.hostPorts }
  }

  /**
   * A VM for this plan; the key includes isolation, so a 'vm' file never takes a VM another file
   * used, and the declared host ports (a hostPorts function is asked now: after globalSetup), so
   * a VM serves only files that may reach what it reaches.
   */
  async lease(plan: FilePlan): Promise<Lease> {
    const ports =
      typeof plan.hostPorts === 'function'
        ? parseHostPorts(await plan.hostPorts({ provided: this.provided() as ProvidedContext }), 'stereos.network.hostPorts()')
        : [...plan.hostPorts]
    return this.pool.lease(ports.length ? `${plan.key}:${ports.join(',')}` : plan.key, withHostPorts(plan.boot, ports))
  }

  /** VMs kept after a failure (keepVm), with why: printed when Vitest closes. */
  readonly kept: KeptVm[] = []

  /** Host copies of files tests attached inside the guest (Vitest copies them on from here). */
  guestFilesDir(): string {
    this.guestFiles ??= mkdtempSync(join(tmpdir(), 'stereos-guest-files-'))
    return this.guestFiles
  }

  /** Called when Vitest closes. */
  dispose(): void {
    if (this.guestFiles) rmSync(this.guestFiles, { recursive: true, force: true })
  }
}
