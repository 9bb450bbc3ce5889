import type { TestProjectInlineConfiguration } from 'vitest/config'

/**
 * The repo's own test projects. Vitest 4+/5 read `test.projects` (the workspace file is no
 * longer looked up), so vitest.config.ts imports this list.
 *
 * - unit, native: no VMs; run with Vitest's default parallelism (native is the vsock addon's
 *   host suite; its in-guest suite runs in e2e).
 * - e2e: boots real QEMU guests. Under TCG a booting VM costs a core, and these machines
 *   have two, so its files run one at a time (a file may boot up to two VMs at once), after
 *   the unit project.
 * - security: attacks on the host side (issue 14) that need real VMs or processes; its files
 *   boot at most one VM each and run one at a time, after e2e (a group of their own, so never
 *   beside an e2e VM). Attacks that need no VM are unit tests.
 */
export const projects: TestProjectInlineConfiguration[] = [
  {
    test: {
      name: 'unit',
      include: ['packages/*/test/**/*.test.ts'],
      sequence: { groupOrder: 0 },
    },
  },
  {
    test: {
      name: 'native',
      root: 'native',
      include: ['test/**/*.test.ts'],
      testTimeout: 60_000,
      sequence: { groupOrder: 0 },
    },
  },
  {
    test: {
      name: 'e2e',
      include: ['test/e2e/**/*.test.ts'],
      maxWorkers: 1,
      fileParallelism: false,
      testTimeout: 300_000,
      hookTimeout: 300_000,
      sequence: { groupOrder: 1 },
    },
  },
  {
    test: {
      name: 'security',
      include: ['test/security/**/*.test.ts'],
      maxWorkers: 1,
      fileParallelism: false,
      testTimeout: 300_000,
      hookTimeout: 300_000,
      sequence: { groupOrder: 2 },
    },
  },
]
