import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { netnsCheck } from '../src/doctor/doctor.js'
import { createSecondUser, secondUserSkipReason, type SecondUser } from './support/second-user.js'

test('without a private namespace, doctor says plainly that every local user can reach the VM, and the fix', () => {
  const check = netnsCheck({
    ok: false,
    userns: true,
    reason: '`unshare --user --map-root-user --net` failed: unshare: write failed /proc/self/uid_map: Operation not permitted',
    fix: 'allow unprivileged user namespaces: …',
  })
  expect(check).toMatchObject({ name: 'private forwards', status: 'warn', fix: 'allow unprivileged user namespaces: …' })
  expect(check.detail).toMatch(/uid_map: Operation not permitted\. .*EVERY local user can connect.*stereosd has no authentication/)
})

const cli = fileURLToPath(new URL('../dist/cli/main.js', import.meta.url))

describe.skipIf(secondUserSkipReason())('doctor as an unprivileged user', () => {
  let user: SecondUser
  beforeAll(() => {
    user = createSecondUser()
  })
  afterAll(() => user?.remove())

  test("finds the user + network namespace that keeps its VMs' forwards private", () => {
    const run = user.node(
      `
      import { execFileSync } from 'node:child_process'
      const out = execFileSync(process.execPath, [process.argv[1], 'doctor', '--json'], { encoding: 'utf8' })
      process.stdout.write(JSON.stringify(JSON.parse(out).checks.find((c) => c.name === 'private forwards')))
    `,
      [cli],
      60_000,
    )
    expect(run.stderr).toBe('')
    expect(JSON.parse(run.stdout)).toMatchObject({
      status: 'ok',
      detail: expect.stringMatching(/^a user \+ network namespace per VM \(unprivileged\): .*only by this user/),
    })
  })
})
