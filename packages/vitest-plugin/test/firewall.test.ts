import { mkdirSync, mkdtempSync, realpathSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, test } from 'vitest'
import { ALLOWED, REFUSED } from '../src/pool/firewall/allowlist.js'
import { type Call, type Reply, RpcFirewall } from '../src/pool/firewall/firewall.js'
import { scrubGuestValue, scrubHostError, scrubStack } from '../src/pool/firewall/scrub.js'

// A project view on the host, a secret file outside it, and a link from inside to outside.
const base = realpathSync(mkdtempSync(join(tmpdir(), 'firewall-')))
const view = join(base, 'project')
mkdirSync(join(view, 'src'), { recursive: true })
const testFile = join(view, 'a.test.ts')
const otherTest = join(view, 'b.test.ts')
writeFileSync(testFile, 'test')
const secret = join(base, 'secret.txt')
writeFileSync(secret, 'TOP-SECRET')
symlinkSync(secret, join(view, 'src', 'link.txt'))

function setup(vitestMajor: 4 | 5 = 5) {
  const toVitest: Call[] = []
  const toGuest: Reply[] = []
  const firewall = new RpcFirewall({ viewRoots: [view], projectRoot: view, vitestMajor, toVitest: (c) => toVitest.push(c), toGuest: (r) => toGuest.push(r) })
  firewall.sent([testFile])
  let n = 0
  /** A guest call (a fresh id unless given): what Vitest got, or the refusal and the guest's answer. */
  const call = (m: string, a: unknown, i: unknown = `guestid-${++n}`) => {
    const out = firewall.fromGuest({ t: 'q', m, a, i })
    return out.kind === 'call' ? { forwarded: out.call } : { refused: out.kind === 'refused' ? out.why : out.kind, answer: toGuest.at(-1) }
  }
  return { firewall, toVitest, toGuest, call }
}

const errorText = (reply: Reply | undefined) => String((reply?.e as Error | undefined)?.message)

describe('the allowlist, method by method', () => {
  test('an unknown method is refused, named, with an answer to the guest', () => {
    const { call } = setup()
    const out = call('readFileOnHost', ['/etc/shadow'])
    expect(out.refused).toContain('may not call readFileOnHost')
    expect(out.answer?.i).toBe('guestid-1')
    expect(errorText(out.answer)).toContain('readFileOnHost')
  })

  test.each(Object.keys(REFUSED))('%s is refused with its reason', (method) => {
    const { call } = setup()
    const out = call(method, ['../package.json', { scripts: { test: 'curl evil | sh' } }])
    expect(out.refused).toContain(`may not call ${method}`)
    expect(out.refused).toContain(REFUSED[method])
  })

  test('prototype names are not methods: birpc looks them up on a plain object', () => {
    const { call } = setup()
    for (const m of ['constructor', 'toString', '__proto__', 'hasOwnProperty']) expect(call(m, []).refused).toContain(`may not call ${m}`)
  })

  test('methods of the other Vitest major are refused', () => {
    const v4 = setup(4)
    expect(v4.call('fetchWarmModules', ['ssr', [testFile]]).refused).toContain("Vitest 4's worker")
    const v5 = setup(5)
    expect(v5.call('fetchWarmModules', ['ssr', [testFile]]).forwarded?.m).toBe('fetchWarmModules')
  })

  test('every allowed method names the majors it exists in', () => {
    for (const [name, rule] of Object.entries(ALLOWED)) expect(rule.vitest.length, name).toBeGreaterThan(0)
  })

  test('the pool assigns its own ids: no guest id reaches Vitest', () => {
    const { call, firewall } = setup()
    const out = call('getCountOfFailedTests', [], 'abc')
    expect(out.forwarded?.i).toMatch(/^guest-\d+$/)
    expect(out.forwarded?.i).not.toBe('abc')
    const back = firewall.fromVitest({ t: 's', i: out.forwarded?.i, r: 3 })
    expect(back).toEqual({ t: 's', i: 'abc', r: 3 })
  })

  test('numeric, object and overlong ids are refused', () => {
    const { call, toVitest } = setup()
    expect(call('resolveSnapshotPath', [testFile], 7).refused).toContain('not a birpc id')
    expect(call('resolveSnapshotPath', [testFile], { x: 1 }).refused).toContain('not a birpc id')
    expect(call('resolveSnapshotPath', [testFile], 'x'.repeat(65)).refused).toContain('not a birpc id')
    expect(toVitest).toEqual([])
  })

  test('a duplicate id is refused while the first call is in flight, and allowed after its answer', () => {
    const { call, firewall } = setup()
    const first = call('resolveSnapshotPath', [testFile], 'dup')
    expect(call('resolveSnapshotPath', [testFile], 'dup').refused).toContain('second call')
    firewall.fromVitest({ t: 's', i: first.forwarded?.i, r: join(view, '__snapshots__', 'a.test.ts.snap') })
    expect(call('resolveSnapshotPath', [testFile], 'dup').forwarded).toBeDefined()
  })

  test('a call without an id goes on as an event: nothing to map back', () => {
    const { firewall } = setup()
    const out = firewall.fromGuest({ t: 'q', m: 'onUserConsoleLog', a: [{ content: 'hi', type: 'stdout', time: 1, size: 2 }] })
    expect(out.kind === 'call' && out.call.i).toBe(undefined)
  })

  test('array-like arguments are refused (birpc would apply them; a fresh array goes on otherwise)', () => {
    const { call } = setup()
    const arrayLike = {
      0: 't1',
      1: { type: 'internal:annotation', annotation: { message: 'm', type: 'notice', attachment: { path: '/etc/shadow' } } },
      length: 2,
    }
    expect(call('onTaskArtifactRecord', arrayLike).refused).toContain('do not match')
    const args = ['t1', { type: 'x', attachments: [] }]
    const out = call('onTaskArtifactRecord', args)
    expect(out.forwarded?.a).toEqual(args)
    expect(out.forwarded?.a).not.toBe(args)
  })

  test('oversized and extra arguments are refused', () => {
    const { call } = setup()
    expect(call('resolve', ['x'.repeat(9000), undefined, 'ssr']).refused).toContain('do not match')
    expect(call('getCountOfFailedTests', [1]).refused).toContain('do not match')
    expect(call('onCancel', ['because']).refused).toContain('do not match')
    expect(call('fetch', ['/a', undefined, 'not an env name!']).refused).toContain('do not match')
  })

  test('a value too deep to check is refused', () => {
    const { call } = setup()
    let deep: Record<string, unknown> = {}
    const top = deep
    for (let i = 0; i < 100; i++) deep = deep.next = {}
    expect(call('onUnhandledError', [top, 'Error']).refused).toContain('too large or deep')
  })

  test('fetch and resolve of an existing host file outside the view are refused before Vite reads it', () => {
    const { call } = setup()
    expect(call('fetch', [`${secret}?raw`, testFile, 'ssr']).refused).toContain('outside the project view')
    expect(call('fetch', [`/@fs${secret}`, undefined, 'ssr']).refused).toContain('outside the project view')
    expect(call('fetch', [`file://${secret}`, undefined, 'ssr']).refused).toContain('outside the project view')
    expect(call('fetch', [join(view, 'src', 'link.txt?raw'), undefined, 'ssr']).refused).toContain('outside the project view')
    expect(call('resolve', ['./x', secret, 'ssr']).refused).toContain('outside the project view')
    expect(call('ensureModuleGraphEntry', [secret, testFile]).refused).toContain('outside the project view')
    // Root-relative URLs, bare specifiers and virtual modules name no host file: Vite maps them; replies are confined.
    expect(call('fetch', ['/src/main.ts', undefined, 'ssr']).forwarded).toBeDefined()
    expect(call('fetch', ['vitest', undefined, 'ssr']).forwarded).toBeDefined()
    expect(call('fetch', ['\0virtual:x', undefined, 'ssr']).forwarded).toBeDefined()
    expect(call('fetch', [testFile, undefined, 'ssr']).forwarded).toBeDefined()
  })

  test('a module answer whose file lies outside the view becomes an error; the code stays on the host', () => {
    const { call, firewall } = setup()
    const out = call('fetch', ['some-package', undefined, 'ssr'])
    const back = firewall.fromVitest({ t: 's', i: out.forwarded?.i, r: { code: 'TOP-SECRET', file: secret, id: secret } }) as Reply
    expect(back.r).toBeUndefined()
    expect(errorText(back)).toContain('outside the project view')
    expect(JSON.stringify(back)).not.toContain('TOP-SECRET')
  })

  test('error answers are checked too: a code frame of a file outside the view is withheld', () => {
    const { call, firewall } = setup()
    const out = call('fetch', ['some-package', undefined, 'ssr'])
    const viteError = Object.assign(new Error(`Parse failure in ${secret}: TOP-SECRET`), { frame: '1 | TOP-SECRET', id: secret })
    const back = firewall.fromVitest({ t: 's', i: out.forwarded?.i, e: viteError }) as Reply
    expect(errorText(back)).toContain('outside the project view')
    expect(String((back.e as Error).stack)).not.toContain('TOP-SECRET')
    // An error about the project's own files goes on as it is.
    const ok = call('fetch', [testFile, undefined, 'ssr'], 'second')
    const own = firewall.fromVitest({ t: 's', i: ok.forwarded?.i, e: new Error(`Parse failure in ${testFile}`) }) as Reply
    expect(errorText(own)).toContain(testFile)
    // A path that is no host file has nothing to give away: the guest gets Vite's message.
    const missing = call('fetch', ['/does-not-exist.js', undefined, 'ssr'], 'third')
    const gone = firewall.fromVitest({ t: 's', i: missing.forwarded?.i, e: new Error('Failed to load url /does-not-exist.js. Does the file exist?') }) as Reply
    expect(errorText(gone)).toContain('Does the file exist?')
  })

  test('snapshot paths: only for the files the pool sent, and learned from Vitest’s answer', () => {
    const { call, firewall } = setup()
    expect(call('resolveSnapshotPath', [join(view, 'node_modules', 'x', 'evil.test.ts')]).refused).toContain('not a test file the pool sent')
    expect(call('resolveSnapshotPath', [otherTest], 'b').refused).toContain('not a test file the pool sent')
    const out = call('resolveSnapshotPath', [testFile], 'c')
    const snap = join(view, '__snapshots__', 'a.test.ts.snap')
    firewall.fromVitest({ t: 's', i: out.forwarded?.i, r: snap })
    expect([...firewall.snapshotFiles]).toEqual([snap])
  })

  test('results name only the worker’s own files', () => {
    const { call } = setup()
    const file = (filepath: string) => ({ filepath, id: 'f1', name: 'a.test.ts', tasks: [] })
    expect(call('onCollected', [[file(otherTest)]]).refused).toContain('not a test file the pool sent')
    expect(call('onQueued', [file('/etc/passwd')]).refused).toContain('not a test file the pool sent')
    expect(call('onCollected', [[file(testFile)]], 'x2').forwarded).toBeDefined()
    expect(call('onAfterSuiteRun', [{ coverage: 'c.json', testFiles: [otherTest], environment: 'node' }], 'x3').refused).toContain('not a test file')
    // Coverage metadata names test files relative to the project root.
    expect(call('onAfterSuiteRun', [{ coverage: 'c.json', testFiles: ['a.test.ts'], environment: 'node' }], 'x5').forwarded).toBeDefined()
    expect(call('onAfterSuiteRun', [{ coverage: 'c.json', testFiles: ['b.test.ts'], environment: 'node' }], 'x6').refused).toContain('not a test file')
    expect(call('onTestModuleDependencies', [testFile, [secret]], 'x4').refused).toContain('outside the project view')
  })

  test("artifacts: Vitest's internal types other than annotations are refused; locations stay in the view", () => {
    const { call } = setup()
    expect(call('onTaskArtifactRecord', ['t', { type: 'internal:browserTrace', data: { entries: [{ stack: `at ${secret}:1:1` }] } }]).refused).toContain(
      'do not match',
    )
    expect(call('onTaskArtifactRecord', ['t', { type: 'mine', location: { file: secret, line: 1, column: 1 } }], 'y').refused).toContain(
      'outside the project view',
    )
  })

  test('stacks the guest sends lose frames naming files outside the view (the host would read them)', () => {
    const { call } = setup()
    const error = {
      message: 'boom',
      stack: `Error: boom\n    at evil (${secret}:1:1)\n    at ${testFile}:2:3\n    at file://${secret}:4:5`,
      stacks: [
        { file: secret, line: 1, column: 1 },
        { file: testFile, line: 2, column: 3 },
      ],
    }
    const out = call('onTaskUpdate', [[['t1', { state: 'fail', errors: [error] }, {}]], [['t1', 'test-finished', undefined]]])
    const sent = out.forwarded?.a as [[string, { errors: { stack: string; stacks: unknown[] }[] }][]]
    const scrubbed = sent[0][0]?.[1].errors[0]
    expect(scrubbed?.stack).not.toContain(secret)
    expect(scrubbed?.stack).toContain(`${testFile}:2:3`)
    expect(scrubbed?.stacks).toEqual([{ file: testFile, line: 2, column: 3 }])
  })

  test('the guest answers only calls Vitest made to it', () => {
    const { firewall } = setup()
    expect(firewall.fromGuest({ t: 's', i: 'nobody-asked', r: 1 }).kind).toBe('refused')
    firewall.fromVitest({ t: 'q', m: 'onCancel', a: ['keyboard-input'], i: 'v1' })
    expect(firewall.fromGuest({ t: 's', i: 'v1', r: 1 })).toEqual({ kind: 'reply', reply: { t: 's', i: 'v1', r: 1 } })
    expect(firewall.fromGuest({ t: 's', i: 'v1', r: 1 }).kind).toBe('refused')
  })

  test("Vitest's answers to unknown ids and the pool's own calls never reach the guest", async () => {
    const { firewall, toVitest } = setup()
    expect(firewall.fromVitest({ t: 's', i: 'guest-999', r: 'x' })).toBeUndefined()
    const done = firewall.call('onTaskArtifactRecord', ['t', {}])
    const own = toVitest.at(-1)
    expect(own?.i).toMatch(/^stereos-/)
    expect(firewall.fromVitest({ t: 's', i: own?.i, r: {} })).toBeUndefined()
    await done
  })

  test('worker responses and snapshot writes are parsed; anything else is refused', () => {
    const { firewall } = setup()
    expect(firewall.fromGuest({ __vitest_worker_response__: true, type: 'testfileFinished' }).kind).toBe('worker')
    expect(firewall.fromGuest({ __vitest_worker_response__: true, type: 'started', extra: 1 }).kind).toBe('refused')
    expect(firewall.fromGuest({ __stereos_host_fs__: 'request', id: 1, request: { op: 'write', path: testFile, data: 'x' } }).kind).toBe('host-fs')
    expect(firewall.fromGuest({ __stereos_host_fs__: 'request', id: 1, request: { op: 'chmod', path: testFile } }).kind).toBe('refused')
    for (const junk of [null, 42, 'frame', [], { t: 'x' }, { m: 'fetch' }]) expect(firewall.fromGuest(junk).kind).toBe('refused')
  })
})

describe('scrubbing', () => {
  const inView = (p: string) => p.startsWith(`${view}/`)
  test('stack lines: frames outside the view go, message lines and node internals stay', () => {
    const stack = `Error: cannot open /etc/x\n    at f (${secret}:1:2)\n    at node:internal/x:1:1\n    at g (src/a.ts:3:4)\n    at ${testFile}:5:6`
    const out = scrubStack(stack, inView)
    expect(out.split('\n')).toEqual([
      'Error: cannot open /etc/x',
      '    at <a file outside the project view>',
      '    at node:internal/x:1:1',
      '    at g (src/a.ts:3:4)',
      `    at ${testFile}:5:6`,
    ])
  })

  test('console origins and cyclic values are walked', () => {
    const log: Record<string, unknown> = { origin: `    at ${secret}:1:1` }
    log.self = log
    expect(scrubGuestValue(log, inView)).toBe(true)
    expect(log.origin).not.toContain(secret)
  })

  test('host errors: a Vite error about the project stays, one about a file outside is replaced', () => {
    expect(scrubHostError(Object.assign(new Error('x'), { loc: { file: secret } }), inView, 'fetch')).not.toHaveProperty('loc')
    const own = new Error(`in ${testFile}`)
    expect(scrubHostError(own, inView, 'fetch')).toBe(own)
  })
})
