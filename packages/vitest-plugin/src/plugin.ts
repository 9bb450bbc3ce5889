import { realpathSync } from 'node:fs'
import { dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { hostPreflight, log, Sandbox, withShares, type BootPlan } from '@stereos/harness'
import type { Plugin } from 'vite'
import type { PoolOptions, PoolRunnerInitializer, TestProject, VitestPluginContext } from 'vitest/node'
import { parseStereosOptions, type ResolvedStereosOptions, type StereosOptionsInput } from './options.js'
import { CaptureBudget, captureDir } from './pool/capture.js'
import { PoolContext, vmPlan } from './pool/context.js'
import { VmLeasePool, type BootVm } from './pool/lease-pool.js'
import { StereosPoolWorker } from './pool/pool-worker.js'
import { poolVm } from './pool/vm.js'
import type { TestUserChoice } from './pool/test-user.js'
import { mountView, viewRoots, viewShares, type ViewPlan } from './pool/view.js'
import { checkVitestVersion } from './version.js'

export const POOL_NAME = 'stereos'
const SNAPSHOT_ENVIRONMENT = fileURLToPath(new URL('./guest/snapshot-environment.js', import.meta.url))
const PLUGIN_DIR = dirname(fileURLToPath(import.meta.url))

/** A pool VM: booted with the project view's shares, then the view laid out inside it for its test user. */
function bootWithView(view: ViewPlan, testUser: TestUserChoice): BootVm {
  return async (plan: BootPlan) => {
    const sandbox = await Sandbox.boot(withShares(plan, viewShares(view)), { log })
    try {
      return poolVm(sandbox, await mountView(sandbox, view, plan.shared.length, testUser))
    } catch (err) {
      await sandbox.shutdown({ timeoutMs: 3_000 }).catch(() => undefined)
      throw err
    }
  }
}

/** The pool runner for one project: VMs sized to its maxWorkers, closed when Vitest closes. */
export function stereosPool(project: TestProject, options: StereosOptionsInput = {}): PoolRunnerInitializer {
  // Validate now: a bad option fails before any VM boots, naming its path.
  return poolRunner(project, parseStereosOptions(options, 'stereos'))
}

/** stereosPool with the options parsed already: stereos() parses them once for all its projects. */
function poolRunner(project: TestProject, options: ResolvedStereosOptions): PoolRunnerInitializer {
  const { testUser, capture } = options
  const captures = new CaptureBudget(capture, () => captureDir(capture, project.vitest.config), log)
  // Vitest 4 may leave a project's maxWorkers unset (resolved at scheduling); 5 always sets it.
  const maxWorkers = Math.max(1, Number(project.config.maxWorkers) || Number(project.vitest.config.maxWorkers) || 1)
  let context: PoolContext | undefined
  let pool: VmLeasePool | undefined
  project.vitest.onClose(async () => {
    await pool?.close()
    context?.dispose()
    // One line per kept VM, with the command that enters it (and the runtime dir, when not the default).
    const env = process.env.STEREOS_RUNTIME_DIR ? `STEREOS_RUNTIME_DIR=${process.env.STEREOS_RUNTIME_DIR} ` : ''
    for (const vm of context?.kept ?? [])
      log(
        `kept VM ${vm.id} running (${vm.reason}): enter it with \`${env}npx stereos-harness ssh ${vm.id}\`, stop it with \`${env}npx stereos-harness stop ${vm.id}\``,
      )
  })
  return {
    name: POOL_NAME,
    createPoolWorker(poolOptions: PoolOptions) {
      if (!context) {
        const root = poolOptions.project.config.root
        const view: ViewPlan = { roots: viewRoots(root, poolOptions.distPath, PLUGIN_DIR), project: realpathSync(root) }
        pool = new VmLeasePool(maxWorkers, bootWithView(view, testUser), log)
        const project = poolOptions.project
        context = new PoolContext(pool, options, view, realpathSync(root), () => project.getProvidedContext() as Record<string, unknown>)
      }
      return new StereosPoolWorker(poolOptions, context, captures)
    },
  }
}

/**
 * `stereos(options)`: a Vite plugin whose configureVitest hook installs the pool on every project
 * whose pool is 'stereos'. The CLI's `--pool=stereos` is a plain string that drops any pool
 * object from the config, so this hook is what makes both it and `test.pool: 'stereos'` work.
 */
export function stereos(input: StereosOptionsInput = {}): Plugin {
  // Parsed once, here: a bad option fails when the config loads, naming its path.
  const options = parseStereosOptions(input, 'stereos')
  const installed = new WeakSet<object>()
  const checked = new WeakSet<object>()
  return {
    name: 'vitest:stereos',
    async configureVitest({ project, vitest }: VitestPluginContext) {
      // The running Vitest's version (not the one this package resolves): that is what matters.
      checkVitestVersion(vitest.version)
      const projects = [...new Set([project, ...vitest.projects])]
      // `stereos-harness debug --rerun` runs Vitest inside a captured VM: the files run there, in forks.
      if (process.env.STEREOS_RERUN === '1' && process.env.STEREOS_SANDBOX === '1') {
        for (const p of projects) if (p.config.pool === POOL_NAME) p.config.pool = 'forks'
        return
      }
      // The host, once per run and before any VM boots: QEMU, KVM (a warning where TCG may run
      // the guests), the mixtape. A failure is one error naming its fix, not one per test file.
      if (!checked.has(vitest) && projects.some((p) => p.config.pool === POOL_NAME)) {
        checked.add(vitest)
        const { warnings } = await hostPreflight(vmPlan(options), log)
        for (const warning of warnings) log(warning)
      }
      for (const p of projects) {
        if (p.config.pool !== POOL_NAME || installed.has(p.config)) continue
        installed.add(p.config)
        p.config.poolRunner = poolRunner(p, options)
        // The pool answers `fetch` inline; a host tmp path would not exist in the guest.
        ;(p.config as { fsModuleCache?: boolean }).fsModuleCache = false
        // Snapshot files written in the guest also go to the host, through the pool's checks.
        p.config.snapshotEnvironment ??= SNAPSHOT_ENVIRONMENT
      }
    },
  } as Plugin
}
