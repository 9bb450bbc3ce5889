import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, test } from 'vitest'
import { HOST_FS_TAG } from '../src/guest/host-fs.js'
import { parseStereosOptions } from '../src/options.js'
import { failedTestsIn, guestOnlyAttachments, localizeAttachment } from '../src/pool/artifacts.js'
import { sandboxOptionsInFile } from '../src/pool/file-options.js'
import { serveHostFs } from '../src/pool/host-fs.js'
import { guestEnv } from '../src/pool/pool-worker.js'
import { checkVitestVersion } from '../src/version.js'

const dir = mkdtempSync(join(tmpdir(), 'pool-units-'))

describe('describe.sandbox literal options, read on the host', () => {
  test('object literals with unquoted keys, single quotes, nesting, comments and trailing commas', () => {
    const file = join(dir, 'a.test.ts')
    writeFileSync(
      file,
      `describe.sandbox('net', { network: { mode: 'none' } }, () => {})
describe.sandbox("big", {
  // more room
  mixtape: 'fixture', resources: { memory: '1GiB', cpus: 2, },
}, () => {})
describe.sandbox('plain', () => {})
describe.sandbox('computed', { memory: size() }, () => {})`,
    )
    expect(sandboxOptionsInFile(file)).toEqual([{ network: { mode: 'none' } }, { mixtape: 'fixture', resources: { memory: '1GiB', cpus: 2 } }])
  })

  test('a missing file has no options', () => {
    expect(sandboxOptionsInFile(join(dir, 'missing.ts'))).toEqual([])
  })
})

test('options errors name the option path', () => {
  expect(() => parseStereosOptions({ resources: { memory: 'lots' }, isolation: 'thread' }, 'stereos')).toThrow(/stereos\.resources\.memory: expected a size[\s\S]*stereos\.isolation/)
})

test('the Vitest version range: 4.1+ and 5.x pass, older and newer majors fail with the fix', () => {
  expect(() => checkVitestVersion('5.1.1')).not.toThrow()
  expect(() => checkVitestVersion('4.1.12')).not.toThrow()
  expect(() => checkVitestVersion('4.0.9')).toThrow(/upgrade vitest to 4\.1 or 5\.x/)
  expect(() => checkVitestVersion('6.0.0')).toThrow(/supports Vitest \^4\.1\.0 \|\| \^5\.0\.0; this is Vitest 6\.0\.0/)
})

test("the guest gets the run's env, not the host machine's", () => {
  expect(guestEnv({ PATH: '/host/bin', HOME: '/root', npm_config_cache: '/x', VITEST: 'true', API_URL: 'http://x', NODE_ENV: 'test', XDG_RUNTIME_DIR: '/run/user/0' })).toEqual({ VITEST: 'true', API_URL: 'http://x', NODE_ENV: 'test' })
})

test('failed tests are found in an onTaskUpdate frame: test-finished events whose result failed', () => {
  const frame = {
    t: 'q',
    m: 'onTaskUpdate',
    a: [
      [
        ['t1', { state: 'fail' }, {}],
        ['t2', { state: 'pass' }, {}],
        ['t3', { state: 'fail' }, {}],
      ],
      [
        ['t1', 'test-finished', undefined],
        ['t2', 'test-finished', undefined],
        ['t3', 'test-prepare', undefined],
      ],
    ],
  }
  expect(failedTestsIn(frame)).toEqual(['t1'])
  expect(failedTestsIn({ t: 'q', m: 'onCollected', a: [] })).toEqual([])
})

test('host writes for the guest stay inside the shared dir', async () => {
  const write = (path: string) => serveHostFs({ [HOST_FS_TAG]: 'request', id: 1, request: { op: 'write', path, data: 'snap' } }, dir)
  expect(await write(join(dir, 'sub', '__snapshots__', 'x.snap'))).toEqual({ [HOST_FS_TAG]: 'reply', id: 1 })
  expect(readFileSync(join(dir, 'sub', '__snapshots__', 'x.snap'), 'utf8')).toBe('snap')
  expect((await write('/etc/passwd')).error).toMatch(/may only write under the shared project dir/)
  expect((await write(join(dir, '..', 'escape'))).error).toMatch(/may only write under/)
})

test('attachments the host cannot read are found and pointed at a host copy of the guest bytes', () => {
  const annotation = { type: 'internal:annotation', annotation: { message: 'm', type: 'notice', attachment: { path: '/tmp/in-guest-only.png' } } }
  const custom = { type: 'x:y', attachments: [{ path: join(dir, 'on-host.txt') }, { path: 'rel/guest.txt' }] }
  writeFileSync(join(dir, 'on-host.txt'), 'host')
  const hostCanRead = (path: string) => path === join(dir, 'on-host.txt')
  const found = [
    ...guestOnlyAttachments({ t: 'q', m: 'onTaskArtifactRecord', a: ['t1', annotation] }, hostCanRead),
    ...guestOnlyAttachments({ t: 'q', m: 'onTaskArtifactRecord', a: ['t1', custom] }, hostCanRead),
  ]
  expect(found.map((a) => a.path)).toEqual(['/tmp/in-guest-only.png', 'rel/guest.txt'])
  localizeAttachment(found[0]!, Buffer.from('png bytes'), dir)
  expect(annotation.annotation.attachment.path).toMatch(new RegExp(`^${dir}/[0-9a-f]{40}\\.png$`))
  expect(readFileSync(annotation.annotation.attachment.path, 'utf8')).toBe('png bytes')
  expect(guestOnlyAttachments({ t: 'q', m: 'onTaskUpdate', a: [] }, hostCanRead)).toEqual([])
})
