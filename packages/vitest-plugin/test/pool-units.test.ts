import { existsSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, test } from 'vitest'
import { sandboxMeta } from '../src/describe.js'
import { parseStereosOptions } from '../src/options.js'
import { failedTestsIn, localizeAttachment, pathAttachments } from '../src/pool/artifacts.js'
import { moduleFile, outsideView } from '../src/pool/confine.js'
import { sandboxOptionsInFile } from '../src/pool/file-options.js'
import { guestEnv } from '../src/pool/guest-env.js'
import { serveHostWrite, type WritePolicy } from '../src/pool/host-writes.js'
import { viewRoots } from '../src/pool/view.js'
import { checkVitestVersion } from '../src/version.js'

const dir = realpathSync(mkdtempSync(join(tmpdir(), 'pool-units-')))

describe('describe.sandbox options, read on the host with a real parser', () => {
  test('literals: unquoted and quoted keys, nesting, comments, trailing commas, TypeScript casts, strings with , and :', () => {
    const file = join(dir, 'a.test.ts')
    writeFileSync(
      file,
      `import { describe } from '@stereos/vitest-plugin'
describe.sandbox('net', { network: { mode: 'none' } }, () => {})
describe.sandbox("big", {
  // more room
  mixtape: 'fix,ture:x', 'resources': { memory: '1GiB', cpus: 2, },
}, () => {})
describe.sandbox('plain', () => {})
describe.sandbox('cast', { isolation: 'vm' as const, resources: { cpus: 1 } satisfies object }, () => {})`,
    )
    expect(sandboxOptionsInFile(file).map(({ options, line }) => ({ options, line }))).toEqual([
      { options: { network: { mode: 'none' } }, line: 2 },
      { options: { mixtape: 'fix,ture:x', resources: { memory: '1GiB', cpus: 2 } }, line: 3 },
      { options: { isolation: 'vm', resources: { cpus: 1 } }, line: 8 },
    ])
  })

  test('each option records its own line, for errors that name it', () => {
    const file = join(dir, 'lines.test.ts')
    writeFileSync(file, `describe.sandbox('l', {\n  resources: {\n    memory: '1GiB',\n  },\n  secrets: ['A',\n    'B'],\n}, () => {})\n`)
    expect(sandboxOptionsInFile(file)).toEqual([
      {
        options: { resources: { memory: '1GiB' }, secrets: ['A', 'B'] },
        line: 1,
        lines: { resources: 2, 'resources.memory': 3, secrets: 5, 'secrets[0]': 5, 'secrets[1]': 6 },
      },
    ])
  })

  test('anything computed is an error naming the file, line and option, never silently ignored', () => {
    const file = join(dir, 'computed.test.ts')
    writeFileSync(file, `const size = () => '1GiB'\n\ndescribe.sandbox('computed', {\n  resources: { memory: size() },\n}, () => {})\n`)
    expect(() => sandboxOptionsInFile(file)).toThrow(/computed\.test\.ts:4: the describe\.sandbox option resources\.memory is not a literal/)
    const whole = join(dir, 'whole.test.ts')
    writeFileSync(whole, `const opts = {}\ndescribe.sandbox('x', opts, () => {})\n`)
    expect(() => sandboxOptionsInFile(whole)).toThrow(/whole\.test\.ts:2: the describe\.sandbox option \(the whole object\) is not a literal/)
  })

  test('a missing file, or one without describe.sandbox, has no options', () => {
    expect(sandboxOptionsInFile(join(dir, 'missing.ts'))).toEqual([])
    const plain = join(dir, 'plain.test.ts')
    writeFileSync(plain, `test('x', () => { const o: { a: number } = { a: 1 } })`)
    expect(sandboxOptionsInFile(plain)).toEqual([])
  })
})

test('meta carries the names of secrets and env variables, never env values', () => {
  expect(sandboxMeta({ secrets: ['TOKEN', 'API'], env: { MODE: 'x-value' }, resources: { memory: '1GiB' } })).toEqual({
    resources: { memory: '1GiB' },
    secrets: ['API', 'TOKEN'],
    env: ['MODE'],
    sandbox: true,
  })
  expect(JSON.stringify(sandboxMeta({ env: { MODE: 'x-value' } }))).not.toContain('x-value')
})

test('options errors name the option path; env values must be one line', () => {
  expect(() => parseStereosOptions({ resources: { memory: 'lots' }, isolation: 'thread' }, 'stereos')).toThrow(
    /stereos\.resources\.memory: expected a size[\s\S]*stereos\.isolation/,
  )
  expect(() => parseStereosOptions({ env: { MULTI: 'a\nb' } }, 'stereos')).toThrow(/stereos\.env\.MULTI: must be one line/)
  expect(() => parseStereosOptions({ env: { 'BAD-NAME': 'x' } }, 'stereos')).toThrow(/stereos\.env\.BAD-NAME: must be a variable name/)
  expect(parseStereosOptions({}, 'stereos').bootstrap).toBe('ssh')
})

test('the Vitest version range: 4.1+ and 5.x pass, older and newer majors fail with the fix', () => {
  expect(() => checkVitestVersion('5.1.1')).not.toThrow()
  expect(() => checkVitestVersion('4.1.12')).not.toThrow()
  expect(() => checkVitestVersion('4.0.9')).toThrow(/upgrade vitest to 4\.1 or 5\.x/)
  expect(() => checkVitestVersion('6.0.0')).toThrow(/supports Vitest \^4\.1\.0 \|\| \^5\.0\.0; this is Vitest 6\.0\.0/)
})

test("the guest gets Vitest's variables, test.env and the env option: nothing else of the host's environment", () => {
  const host = {
    PATH: '/host/bin',
    HOME: '/root',
    GITHUB_TOKEN: 'ghp_x',
    NPM_TOKEN: 'npm_x',
    ACTIONS_ID_TOKEN_REQUEST_TOKEN: 'oidc',
    NODE_EXTRA_CA_CERTS: '/etc/ca.pem',
    HTTPS_PROXY: 'http://proxy',
    NODE_V8_COVERAGE: '/tmp/cov',
    AWS_SECRET_ACCESS_KEY: 'k',
    VITEST: 'true',
    VITEST_POOL_ID: '1',
    NODE_ENV: 'test',
    TZ: 'UTC',
    LC_ALL: 'C',
    CI: 'true',
    FROM_CONFIG: 'c',
  }
  expect(guestEnv(host, { FROM_CONFIG: 'c' }, { EXPLICIT: 'e' })).toEqual({
    VITEST: 'true',
    VITEST_POOL_ID: '1',
    NODE_ENV: 'test',
    TZ: 'UTC',
    LC_ALL: 'C',
    CI: 'true',
    FROM_CONFIG: 'c',
    EXPLICIT: 'e',
  })
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

describe('host writes: only snapshot files of this run, only when Vitest updates, never through links', () => {
  const root = join(dir, 'project')
  mkdirSync(join(root, 'tests', '__snapshots__'), { recursive: true })
  mkdirSync(join(root, '.git', 'hooks'), { recursive: true })
  writeFileSync(join(root, 'vitest.config.ts'), 'export default {}')
  const snap = join(root, 'tests', '__snapshots__', 'a.test.ts.snap')
  const policy = (update: WritePolicy['update']): WritePolicy => ({
    projectRoot: root,
    update,
    snapshotFiles: new Set([snap]),
    testFiles: new Set([join(root, 'own.test.ts')]),
  })

  test('a .snap Vitest resolved is written; a new file snapshot is created', async () => {
    await serveHostWrite({ op: 'write', path: snap, data: 'snap v1' }, policy('new'))
    expect(readFileSync(snap, 'utf8')).toBe('snap v1')
    await serveHostWrite({ op: 'write', path: join(root, 'tests', '__file__', 'out.html'), data: '<p>' }, policy('new'))
    expect(readFileSync(join(root, 'tests', '__file__', 'out.html'), 'utf8')).toBe('<p>')
  })

  test('hostile targets are refused with the path and the reason', async () => {
    const write = (path: string, update: WritePolicy['update'] = 'all') => serveHostWrite({ op: 'write', path, data: 'x' }, policy(update))
    await expect(write(join(root, '.git', 'hooks', 'pre-commit'))).rejects.toThrow(/may not write .*pre-commit on the host: no snapshot is written under \.git/)
    await expect(write(join(root, 'node_modules', 'vitest', 'index.js'))).rejects.toThrow(/under node_modules/)
    await expect(write('/etc/passwd')).rejects.toThrow(/outside the project/)
    await expect(write(join(root, '..', 'escape'))).rejects.toThrow(/outside the project/)
    await expect(write('relative/x.snap')).rejects.toThrow(/not an absolute path/)
    // Without -u an existing file is never overwritten, and CI mode writes nothing at all.
    await expect(write(join(root, 'vitest.config.ts'), 'new')).rejects.toThrow(/exists, and file snapshots are overwritten only with -u/)
    await expect(write(snap, 'none')).rejects.toThrow(/does not update snapshots/)
    expect(readFileSync(join(root, 'vitest.config.ts'), 'utf8')).toBe('export default {}')
    expect(existsSync(join(root, '.git', 'hooks', 'pre-commit'))).toBe(false)
  })

  test('symlinks, as the target or on the way, are refused: nothing is written outside', async () => {
    const outside = mkdtempSync(join(tmpdir(), 'pool-units-outside-'))
    symlinkSync(outside, join(root, 'tests', 'link'))
    symlinkSync(join(outside, 'target.txt'), join(root, 'tests', 'file-link.txt'))
    const write = (path: string) => serveHostWrite({ op: 'write', path, data: 'x' }, policy('all'))
    await expect(write(join(root, 'tests', 'link', 'x.html'))).rejects.toThrow(/is a symbolic link/)
    await expect(write(join(root, 'tests', 'file-link.txt'))).rejects.toThrow(/is a symbolic link/)
    expect(existsSync(join(outside, 'x.html'))).toBe(false)
    expect(existsSync(join(outside, 'target.txt'))).toBe(false)
  })

  test("new inline snapshots: the worker's own test file is rewritten when Vitest updates, another file is not", async () => {
    const own = join(root, 'own.test.ts')
    writeFileSync(own, 'expect(1).toMatchInlineSnapshot()')
    await serveHostWrite({ op: 'write', path: own, data: 'expect(1).toMatchInlineSnapshot(`1`)' }, policy('new'))
    expect(readFileSync(own, 'utf8')).toBe('expect(1).toMatchInlineSnapshot(`1`)')
    await expect(serveHostWrite({ op: 'write', path: own, data: 'x' }, policy('none'))).rejects.toThrow(/does not update snapshots/)
    writeFileSync(join(root, 'other.test.ts'), 'other')
    await expect(serveHostWrite({ op: 'write', path: join(root, 'other.test.ts'), data: 'x' }, policy('new'))).rejects.toThrow(/overwritten only with -u/)
  })

  test("a file snapshot cannot create another file's .snap, code or a package.json", async () => {
    const write = (path: string) => serveHostWrite({ op: 'write', path, data: 'module.exports = {}' }, policy('new'))
    for (const name of ['tests/__snapshots__/other.test.ts.snap', 'tests/evil.test.ts', 'src/setup.mjs', 'lib/x.cjs', 'ui/x.tsx', 'sub/package.json']) {
      await expect(write(join(root, name)), name).rejects.toThrow(/a file snapshot is data/)
      expect(existsSync(join(root, name))).toBe(false)
    }
    await write(join(root, 'tests', '__snapshots__', 'page.output.html'))
    expect(existsSync(join(root, 'tests', '__snapshots__', 'page.output.html'))).toBe(true)
  })

  test('removal: only a resolved .snap, only with -u', async () => {
    await expect(serveHostWrite({ op: 'remove', path: join(root, 'vitest.config.ts') }, policy('all'))).rejects.toThrow(/only snapshot files Vitest resolved/)
    await expect(serveHostWrite({ op: 'remove', path: snap }, policy('new'))).rejects.toThrow(/removed only with -u/)
    await serveHostWrite({ op: 'remove', path: snap }, policy('all'))
    expect(existsSync(snap)).toBe(false)
  })
})

describe('module fetches are confined to the project view', () => {
  const roots = [join(dir, 'view')]
  mkdirSync(join(dir, 'view', 'src'), { recursive: true })
  writeFileSync(join(dir, 'view', 'src', 'a.ts'), '')
  symlinkSync('/etc', join(dir, 'view', 'etc-link'))

  test('module files: ids with queries, /@fs/, file: URLs; virtual modules name none', () => {
    expect(moduleFile('/etc/passwd?raw')).toBe('/etc/passwd')
    expect(moduleFile('/@fs/etc/passwd?url#x')).toBe('/etc/passwd')
    expect(moduleFile('file:///etc/passwd?inline')).toBe('/etc/passwd')
    expect(moduleFile('\0virtual:x')).toBeUndefined()
    expect(moduleFile('/@vite/env')).toBeUndefined()
    expect(moduleFile(null)).toBeUndefined()
  })

  test('replies naming a file outside the view (also through a link in the view) are caught; others pass', () => {
    expect(outsideView({ code: 'export default "root:x"', file: '/etc/passwd', id: '/etc/passwd?raw' }, roots)).toBe('/etc/passwd')
    expect(outsideView({ code: '', file: join(dir, 'view', 'etc-link', 'passwd'), id: 'x' }, roots)).toBe(join(dir, 'view', 'etc-link', 'passwd'))
    expect(outsideView({ code: '', file: join(dir, 'view', 'src', 'a.ts'), id: 'x' }, roots)).toBeUndefined()
    expect(outsideView({ externalize: '/elsewhere/x.js', type: 'module' }, roots)).toBeUndefined()
    expect(outsideView({ code: '', file: null, id: '\0virtual' }, roots)).toBeUndefined()
    expect(outsideView({ 'url-a': { cached: true, file: '/etc/shadow', tmp: '/tmp/x' } }, roots)).toBe('/etc/shadow')
    expect(outsideView(null, roots)).toBeUndefined()
  })
})

describe('the project view never exposes the home directory', () => {
  const home = join(dir, 'home')
  const repo = join(home, 'work', 'repo')
  mkdirSync(join(repo, 'node_modules', 'vitest', 'dist'), { recursive: true })
  mkdirSync(join(repo, 'node_modules', '@stereos', 'vitest-plugin', 'dist'), { recursive: true })
  const globalNm = join(home, '.nvm', 'lib', 'node_modules')
  mkdirSync(join(globalNm, 'vitest', 'dist'), { recursive: true })
  mkdirSync(join(globalNm, '@stereos', 'vitest-plugin', 'dist'), { recursive: true })

  test('project, Vitest and the plugin in one repo: one root, the repo', () => {
    expect(viewRoots(repo, join(repo, 'node_modules', 'vitest', 'dist'), join(repo, 'node_modules', '@stereos', 'vitest-plugin', 'dist'), home)).toEqual([repo])
  })

  test('Vitest installed globally under home: the project and that node_modules, not home', () => {
    expect(viewRoots(repo, join(globalNm, 'vitest', 'dist'), join(globalNm, '@stereos', 'vitest-plugin', 'dist'), home)).toEqual([globalNm, repo])
  })

  test('a project that is the home directory itself is refused with the fix', () => {
    mkdirSync(join(home, 'node_modules', 'vitest', 'dist'), { recursive: true })
    expect(() => viewRoots(home, join(home, 'node_modules', 'vitest', 'dist'), join(home, 'node_modules', 'vitest', 'dist'), home)).toThrow(
      /would have to share .*home with the guest/,
    )
  })
})

test('attachments are read from the guest: every path is found and pointed at a host copy of the guest bytes', () => {
  const annotation = { type: 'internal:annotation', annotation: { message: 'm', type: 'notice', attachment: { path: '/tmp/in-guest.png' } } }
  const custom = { type: 'x:y', attachments: [{ path: '/etc/hostname' }, { path: 'rel/guest.txt' }, { body: 'inline' }] }
  const found = [
    ...pathAttachments({ t: 'q', m: 'onTaskArtifactRecord', a: ['t1', annotation] }),
    ...pathAttachments({ t: 'q', m: 'onTaskArtifactRecord', a: ['t1', custom] }),
  ]
  expect(found.map((a) => a.path)).toEqual(['/tmp/in-guest.png', '/etc/hostname', 'rel/guest.txt'])
  localizeAttachment(found[0]!, Buffer.from('png bytes'), dir)
  expect(annotation.annotation.attachment.path).toMatch(new RegExp(`^${dir}/[0-9a-f]{40}\\.png$`))
  expect(readFileSync(annotation.annotation.attachment.path, 'utf8')).toBe('png bytes')
  expect(pathAttachments({ t: 'q', m: 'onTaskUpdate', a: [] })).toEqual([])
})
