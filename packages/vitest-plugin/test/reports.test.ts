import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { createRequire } from 'node:module'
import { describe, expect, test } from 'vitest'
import { failedSuitesIn, LOG_TAIL_BYTES, logTail, vmLogAnnotations } from '../src/pool/artifacts.js'
import { failedFileCalls, failedFileTask, fileHashOf, serializeError } from '../src/pool/failed-file.js'
import type { Sandbox } from '@stereos/harness'

const dir = mkdtempSync(join(tmpdir(), 'pool-reports-'))
const distPath = dirname(createRequire(import.meta.url).resolve('vitest/node'))

/** Only what vmLogAnnotations reads of a Sandbox: real log files, a real timeline. */
function sandboxWithLogs(serial: string | Buffer, qemu: string): Sandbox {
  writeFileSync(join(dir, 'serial.log'), serial)
  writeFileSync(join(dir, 'qemu.log'), qemu)
  return {
    info: { id: 'vm-t', arch: 'x86_64', accel: 'tcg', mixtape: { ref: 'fixture' }, timeline: [{ phase: 'agent-ready', atMs: 5 }] },
    logs: { serial: join(dir, 'serial.log'), qemu: join(dir, 'qemu.log') },
  } as unknown as Sandbox
}

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

describe('VM logs travel inside the report (#13.7)', () => {
  test('the serial console goes as a bounded base64 body (its last 256 KiB), not a host path; an empty qemu.log is left out', () => {
    const big = Buffer.concat([Buffer.alloc(LOG_TAIL_BYTES, 'a'), Buffer.from('THE END\n')])
    const [serial, ...rest] = vmLogAnnotations(sandboxWithLogs(big, '')) as { annotation: { message: string; attachment?: { body: string; path?: string } } }[]
    expect(serial?.annotation.attachment?.path).toBeUndefined()
    const body = Buffer.from(serial?.annotation.attachment?.body ?? '', 'base64')
    expect(body.length).toBe(LOG_TAIL_BYTES)
    expect(body.toString().endsWith('THE END\n')).toBe(true)
    expect(serial?.annotation.message).toBe('VM vm-t serial console (x86_64, tcg), last 256 KiB')
    expect(rest.map((a) => a.annotation.message)).toEqual(['VM vm-t boot timeline: agent-ready 5 ms'])
  })

  test('a qemu.log with content is attached', () => {
    const messages = (
      vmLogAnnotations(sandboxWithLogs('boot\n', 'qemu: warning\n')) as { annotation: { message: string; attachment?: { body: string } } }[]
    ).map((a) => [a.annotation.message, a.annotation.attachment && Buffer.from(a.annotation.attachment.body, 'base64').toString()])
    expect(messages).toEqual([
      ['VM vm-t serial console (x86_64, tcg)', 'boot\n'],
      ['VM vm-t qemu.log', 'qemu: warning\n'],
      ['VM vm-t boot timeline: agent-ready 5 ms', undefined],
    ])
    expect(logTail(join(dir, 'missing.log')).length).toBe(0)
  })

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
