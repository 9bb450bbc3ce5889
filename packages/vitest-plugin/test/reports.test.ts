import { appendFileSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { createRequire } from 'node:module'
import { describe, expect, test } from 'vitest'
import { addVmLogMeta, failedSuitesIn, vmLogAnnotations, vmLogError, vmLogMeta } from '../src/pool/artifacts.js'
import { FILE_LOG_BYTES, FileLog, fileLogPath, OutputTail, readLogSince } from '../src/pool/guest-log.js'
import type { PoolVm } from '../src/pool/vm.js'
import { failedFileCalls, failedFileTask, fileHashOf, serializeError } from '../src/pool/failed-file.js'

const dir = mkdtempSync(join(tmpdir(), 'pool-reports-'))
const distPath = dirname(createRequire(import.meta.url).resolve('vitest/node'))

describe('a file whose VM cannot be had is reported as a failed file (#13.2)', () => {
  test("the file task has the running Vitest's file id, state fail, the error with its fix; calls in a worker's order", async () => {
    const hash = await fileHashOf(distPath)
    const task = failedFileTask(
      '/p/tests/a.test.ts',
      '/p',
      'unit',
      hash,
      serializeError(Object.assign(new Error('cannot boot\nFix: do this'), { code: 'BOOT_TIMEOUT' })),
    )
    const { generateFileHash } = (await import('vitest/node')) as { generateFileHash: (f: string, p?: string) => string }
    expect(task.id).toBe(generateFileHash('tests/a.test.ts', 'unit'))
    expect(task.name).toBe('tests/a.test.ts')
    expect(task.file).toBe(task)
    expect(task.result).toEqual({
      state: 'fail',
      errors: [{ name: 'Error', message: 'cannot boot\nFix: do this', stack: 'Error: cannot boot\nFix: do this', code: 'BOOT_TIMEOUT' }],
    })
    expect(failedFileCalls(task, 'run').map(([m]) => m)).toEqual(['onQueued', 'onCollected', 'onTaskUpdate'])
    expect(failedFileCalls(task, 'collect').map(([m]) => m)).toEqual(['onCollected', 'onTaskUpdate'])
    expect(failedFileCalls(task, 'run')[2]?.[1]).toEqual([[[task.id, task.result, task.meta]], [[task.id, 'suite-failed-early', undefined]]])
  })
})

describe("a failing file's report carries what the guest printed while it ran (#20.5)", () => {
  /** A VM with real log files, a real timeline, and a guest journal answered by `journal`. */
  function fakeVm(journal: (args: string[]) => string) {
    writeFileSync(join(dir, 'serial.log'), 'before the file: provisioning\n')
    writeFileSync(join(dir, 'qemu.log'), '')
    const execs: { args: string[]; user: unknown }[] = []
    const vm = {
      info: { id: 'vm-t', arch: 'x86_64', accel: 'tcg', mixtape: { ref: 'fixture' }, timeline: [{ phase: 'agent-ready', atMs: 5 }] },
      logs: { serial: join(dir, 'serial.log'), qemu: join(dir, 'qemu.log') },
      exec: async (_cmd: string, args: string[], options: { user?: unknown }) => {
        execs.push({ args, user: options.user })
        return { exitCode: 0, stdout: journal(args), stderr: '' }
      },
    } as unknown as PoolVm
    return { vm, execs }
  }

  test('readLogSince: the bytes written since the mark, only the end of them when many; the end when the log was cut below the mark', () => {
    const path = join(dir, 'since.log')
    writeFileSync(path, 'old\n')
    appendFileSync(path, 'new line\n')
    expect(readLogSince(path, 4, 1024)).toEqual({ bytes: Buffer.from('new line\n'), skipped: 0, cut: false })
    expect(readLogSince(path, 4, 5)).toEqual({ bytes: Buffer.from('line\n'), skipped: 4, cut: false })
    writeFileSync(path, 'x\n')
    expect(readLogSince(path, 4, 1024)).toEqual({ bytes: Buffer.from('x\n'), skipped: 0, cut: true })
    expect(readLogSince(join(dir, 'missing.log'), 0, 10).bytes.length).toBe(0)
  })

  test('OutputTail keeps the last bytes of a stream and counts them all', () => {
    const tail = new OutputTail(10)
    tail.push('0123456789')
    tail.push('abc')
    tail.push(Buffer.from('x'.repeat(30) + 'END'))
    expect(tail.bytes().toString()).toBe('xxxxxxxEND')
    expect(tail.total).toBe(46)
    tail.reset()
    expect(tail.bytes().length).toBe(0)
  })

  test("the excerpt: the console since the file started (not before), the guest's journal as root, the worker's stderr; bounded, printable, written under the attachments dir", async () => {
    const { vm, execs } = fakeVm(() => '[  12.5] kernel: node invoked oom-killer\n')
    const log = new FileLog(vm, ['/p/a.test.ts'])
    appendFileSync(vm.logs.serial, `during the file\n${'s'.repeat(100 * 1024)}\nconsole end\n`)
    log.stderr.push(`stderr start ${'e'.repeat(100 * 1024)}\nMARKER \x1b[31mred\n`)
    const out = join(dir, 'attachments')
    const got = await log.gather(out)
    expect(got.path).toBe(fileLogPath(out, 'vm-t', '/p/a.test.ts'))
    expect(readFileSync(got.path as string, 'utf8')).toBe(got.text)
    expect(got.text).toMatch(/^VM vm-t \(x86_64, tcg, fixture\): what the guest printed while \/p\/a\.test\.ts ran/)
    expect(got.text).not.toContain('provisioning')
    expect(got.text).not.toContain('during the file')
    expect(got.text).toContain('console end')
    expect(got.text).toContain('oom-killer')
    expect(got.text).not.toContain('stderr start')
    expect(got.text).toContain('MARKER ?[31mred')
    expect(Buffer.byteLength(got.text)).toBeLessThanOrEqual(FILE_LOG_BYTES + 1024)
    expect(got.parts.map((p) => p.title)).toEqual([
      expect.stringMatching(/^serial console \(last \d+ of \d+ bytes\)$/),
      'guest journal / kernel messages',
      expect.stringMatching(/^guest worker stderr \(last \d+ of \d+ bytes\)$/),
    ])
    expect(execs[0]?.user).toBe('root')
    // The journal is read a few times per file at most (each read is a guest exec).
    for (let i = 0; i < 4; i++) await log.gather(out)
    expect(execs.length).toBe(3)
    log.restart(['/p/b.test.ts'])
    const next = await log.gather(out)
    expect(next.text).not.toContain('console end')
    expect(next.text).not.toContain('MARKER')
    expect(execs.length).toBe(4)
  })

  test("annotations: the path and last lines in the message (terminal, junit), the whole excerpt as a base64 body (blob, HTML); JSON gets it through the failed tests' meta", async () => {
    const { vm } = fakeVm(() => '')
    const log = new FileLog(vm, ['/p/a.test.ts'])
    appendFileSync(vm.logs.serial, 'line 1\nline 2\n')
    log.stderr.push('worker says hi\n')
    const got = await log.gather(join(dir, 'attachments'))
    const [excerpt, ...rest] = vmLogAnnotations(vm, got) as { annotation: { message: string; attachment?: { body: string; path?: string } } }[]
    expect(excerpt?.annotation.attachment?.path).toBeUndefined()
    expect(Buffer.from(excerpt?.annotation.attachment?.body ?? '', 'base64').toString()).toBe(got.text)
    expect(excerpt?.annotation.message).toBe(
      `VM vm-t (x86_64, tcg, fixture): what the guest printed while this file ran, ${Buffer.byteLength(got.text)} bytes in ${got.path}; last lines:\n    serial console:\n      line 1\n      line 2\n    guest worker stderr:\n      worker says hi`,
    )
    expect(rest.map((a) => a.annotation.message)).toEqual(['VM vm-t boot timeline: agent-ready 5 ms'])
    expect(vmLogError(vm, got).message).toContain(`bytes in ${got.path}; last lines:\n      serial console:\n        line 1`)
    const frame = {
      t: 'q',
      m: 'onTaskUpdate',
      a: [
        [
          ['t1', { state: 'fail' }, { mine: 1 }],
          ['t2', { state: 'pass' }, {}],
        ],
        [],
      ],
    }
    addVmLogMeta(frame, ['t1'], vmLogMeta(vm, got))
    expect(frame.a[0]?.[0]?.[2]).toEqual({
      mine: 1,
      stereosVmLog: { vm: 'vm-t', path: got.path, bytes: Buffer.byteLength(got.text), lastLines: expect.stringContaining('worker says hi') },
    })
    expect(frame.a[0]?.[1]?.[2]).toEqual({})
  })

  test('a guest whose journal cannot be read still gets the rest, with the reason', async () => {
    const { vm } = fakeVm(() => {
      throw new Error('agent gone')
    })
    const got = await new FileLog(vm, ['/p/a.test.ts']).gather(join(dir, 'attachments'))
    expect(got.text).toContain("(the guest's journal could not be read: agent gone)")
  })
})

describe('file-level failures', () => {
  test('file-level failures (import error, throwing beforeAll) are found in onTaskUpdate; failed tests and passing suites are not', () => {
    const fileResult = { state: 'fail', errors: [{ message: 'Cannot find module' }] }
    const frame = {
      t: 'q',
      m: 'onTaskUpdate',
      a: [
        [
          ['f1', fileResult, {}],
          ['s1', { state: 'fail' }, {}],
          ['t1', { state: 'fail', errors: [{ message: 'expected' }] }, {}],
          ['s2', { state: 'pass' }, {}],
        ],
        [
          ['f1', 'suite-failed-early', undefined],
          ['s1', 'suite-finished', undefined],
          ['t1', 'test-finished', undefined],
          ['s2', 'suite-finished', undefined],
        ],
      ],
    }
    expect(failedSuitesIn(frame)).toEqual([fileResult])
    expect(failedSuitesIn({ t: 'q', m: 'onCollected', a: [] })).toEqual([])
  })
})
