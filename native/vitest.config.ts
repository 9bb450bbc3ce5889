import { defineConfig } from 'vitest/config'

/**
 * The addon's host suite (`npm test -w native`, or `npx vitest run --root native`). The
 * in-guest suite is test/guest/vsock-loopback.mjs, run inside a VM (see test/guest/run-qemu.mjs).
 */
export default defineConfig({
  test: {
    name: 'native',
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
  },
})
