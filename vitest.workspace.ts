import type { TestProjectInlineConfiguration } from 'vitest/config'

/**
 * The repo's own test projects. Vitest 4+/5 read `test.projects` (the workspace file is no
 * longer looked up), so vitest.config.ts imports this list. test/README.md says where each kind
 * of test lives and what it needs.
 *
 * - unit: no QEMU, no Debian package, no fixture guest (`npm run test:unit`).
 * - host: needs host tools that setup installs (QEMU, qemu-img, docker-registry, OpenSSH) but
 *   boots no VM: the files in HOST_TESTS.
 * - native: the vsock addon's host suite (needs its compiled prebuild; its in-guest suite runs
 *   in e2e).
 * - fixture: builds the fixture guest as a fresh machine would (apt, e2fsprogs; no QEMU).
 * - e2e: boots real QEMU guests. Under TCG a booting VM costs a core, and these machines
 *   have two, so its files run one at a time (a file may boot up to two VMs at once), after
 *   the projects above.
 * - security: attacks on the host side (issue 14) that need real VMs or processes; its files
 *   boot at most one VM each and run one at a time, after e2e (a group of their own, so never
 *   beside an e2e VM). Attacks that need no VM are unit tests.
 */

/** Unit-style files (packages/<name>/test) that need a host tool from setup. */
const HOST_TESTS = [
  'packages/harness/test/capture-pull.test.ts', // docker-registry
  'packages/harness/test/cli.test.ts', // doctor exits 0 only where QEMU is installed
  'packages/harness/test/doctor-netns.test.ts', // doctor, as a second user
  'packages/harness/test/hostile-image.test.ts', // qemu-img
  'packages/harness/test/kvm.test.ts', // the probe starts QEMU where /dev/kvm works
  'packages/harness/test/oci-auth.test.ts', // docker-registry
  'packages/harness/test/oci-cli.test.ts',
  'packages/harness/test/oci-faults.test.ts',
  'packages/harness/test/oci-platform.test.ts',
  'packages/harness/test/oci-pull.test.ts',
  'packages/harness/test/qmp.test.ts', // a real QEMU, no guest
  'packages/harness/test/ssh-key.test.ts', // ssh-keygen
]

export const projects: TestProjectInlineConfiguration[] = [
  {
    test: {
      name: 'unit',
      include: ['packages/*/test/**/*.test.ts', 'test/repo/**/*.test.ts'],
      exclude: ['**/node_modules/**', ...HOST_TESTS],
      sequence: { groupOrder: 0 },
    },
  },
  {
    test: {
      name: 'host',
      include: HOST_TESTS,
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
      name: 'fixture',
      include: ['test/fixture/**/*.test.ts'],
      testTimeout: 600_000,
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
