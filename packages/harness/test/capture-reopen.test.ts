import { mkdirSync, mkdtempSync, realpathSync, symlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, test } from 'vitest'
import { poolContextOf, remountArgs, rerunArgs, viewSources } from '../src/capture/reopen.js'
import { testUserCommand } from '../src/cli/rerun.js'

const context = {
  file: 'test/widget.test.ts',
  failedTests: ['the widget renders'],
  checkout: '/ci/work/app',
  root: '/ci/work/app/packages/web',
  view: [
    { tag: 'share1', root: '/ci/work/app' },
    { tag: 'share2', root: '/ci/tools/node_modules' },
  ],
  testUser: { uid: 64000, gid: 64000 },
  home: '/var/lib/stereos-harness/view/home',
  node: '/opt/stereos-harness/node/bin/node',
  vitest: { dir: '/ci/work/app/node_modules/vitest', version: '5.1.1' },
}

describe('reopening a pool capture over the local checkout (#22)', () => {
  test("the pool's context is read with its schema; a Sandbox.capture context or a malformed one is not a pool's", () => {
    expect(poolContextOf(context)).toEqual(context)
    expect(poolContextOf({ file: 'x.test.ts', failedTests: [] })).toBeUndefined()
    expect(poolContextOf({ ...context, view: [{ tag: 'share1; rm -rf /', root: '/ci' }] })).toBeUndefined()
    expect(poolContextOf({ ...context, testUser: { uid: -1, gid: 0 } })).toBeUndefined()
  })

  test('view roots map under the local checkout; a root outside the captured checkout, missing here, or leading out by a link is served empty', () => {
    const local = realpathSync(mkdtempSync(join(tmpdir(), 'reopen-')))
    const outside = realpathSync(mkdtempSync(join(tmpdir(), 'reopen-out-')))
    mkdirSync(join(local, 'packages'))
    symlinkSync(outside, join(local, 'packages', 'web'))
    const sources = viewSources(
      {
        ...context,
        view: [
          { tag: 'share1', root: '/ci/work/app' },
          { tag: 'share2', root: '/ci/tools/node_modules' },
          { tag: 'share3', root: '/ci/work/app/missing' },
          { tag: 'share4', root: '/ci/work/app/packages/web' },
          { tag: 'share5', root: '/ci/work/app/../../etc' },
        ],
      },
      local,
    )
    expect(sources.map((s) => [s.tag, s.local])).toEqual([
      ['share1', local],
      ['share2', undefined],
      ['share3', undefined],
      ['share4', undefined],
      ['share5', undefined],
    ])
    expect(sources[1]?.why).toMatch(/outside the captured checkout/)
    expect(sources[3]?.why).toMatch(/leads outside/)
  })

  test("the remount gets each root's tag and overlay index; the rerun is Vitest's CLI on the file with forks and the inspector", () => {
    expect(remountArgs(context)).toEqual(['share1', '0', '/ci/work/app', 'share2', '1', '/ci/tools/node_modules'])
    expect(rerunArgs(context, { brk: true, port: 9229 })).toEqual([
      '/ci/work/app/node_modules/vitest/vitest.mjs',
      'run',
      'test/widget.test.ts',
      '--root',
      '/ci/work/app/packages/web',
      '--pool=forks',
      '--no-file-parallelism',
      '--inspect-brk=127.0.0.1:9229',
    ])
    expect(rerunArgs(context, { brk: false, port: 9229 })).toContain('--inspect=127.0.0.1:9229')
  })

  test('the shell runs as the test user in Vitest’s root, through sudo and the guest Node; CMD is one argument', () => {
    const command = testUserCommand(context, 'cat "a b"; exit 3')
    expect(command.slice(0, 2)).toEqual(['sudo', '-n'])
    expect(command).toContain('HOME=/var/lib/stereos-harness/view/home')
    const at = command.indexOf(context.node)
    expect(command.slice(at + 3)).toEqual(['64000', '64000', '/ci/work/app/packages/web', 'sh', '-c', 'cat "a b"; exit 3'])
    expect(testUserCommand(context, undefined).at(-1)).toMatch(/bash -i/)
  })
})
