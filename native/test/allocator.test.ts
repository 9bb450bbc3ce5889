import { spawn } from 'node:child_process'
import { readFileSync, readdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { describe, expect, test } from 'vitest'
import { allocateCid, FIRST_GUEST_CID } from '../src/cid.js'
import { assertDistFresh, distDir, tempDir } from './support.js'

const worker = join(import.meta.dirname, 'fixtures', 'alloc-worker.mjs')

interface WorkerResult {
  pid: number
  allocated: number[]
}

/** Runs `n` allocator processes against one directory "kernel", started together. */
async function runWorkers(n: number, count: number, mode: 'hold' | 'churn'): Promise<{ dir: string; results: WorkerResult[] }> {
  const dir = tempDir(`vsock-alloc-${mode}-`)
  const children = Array.from({ length: n }, () => spawn(process.execPath, [worker, dir, String(count), mode, distDir], { stdio: ['ignore', 'pipe', 'pipe'] }))
  const lines = children.map((c) => createInterface({ input: c.stdout! })[Symbol.asyncIterator]())
  const stderr = children.map((c) => {
    let s = ''
    c.stderr!.on('data', (d) => (s += d))
    return () => s
  })
  const exits = children.map((c) => new Promise<number | null>((r) => c.on('close', r)))
  for (const [i, it] of lines.entries()) {
    const first = await it.next()
    if (first.value !== 'ready') throw new Error(`worker ${i} did not start: ${stderr[i]!()}`)
  }
  writeFileSync(join(dir, 'go'), '')
  const results: WorkerResult[] = []
  for (const [i, it] of lines.entries()) {
    const line = await it.next()
    const code = await exits[i]
    if (code !== 0 || line.done) throw new Error(`worker ${i} failed (exit ${code}): ${stderr[i]!()}`)
    results.push(JSON.parse(line.value as string) as WorkerResult)
  }
  return { dir, results }
}

describe('allocateCid', () => {
  test('takes the first CID the arbiter grants, from 3 upward', () => {
    const taken = new Set([3, 4, 6])
    const tried: number[] = []
    const cid = allocateCid((c) => {
      tried.push(c)
      return !taken.has(c)
    })
    expect(cid).toBe(5)
    expect(tried).toEqual([3, 4, 5])
    expect(allocateCid((c) => !taken.has(c), { from: 6 })).toBe(7)
  })

  test('stops at the first error that is not "in use"', () => {
    const err = Object.assign(new Error('ioctl EINVAL'), { code: 'EINVAL' })
    let calls = 0
    expect(() =>
      allocateCid(() => {
        calls++
        throw err
      }),
    ).toThrow(err)
    expect(calls).toBe(1)
  })

  test('gives up with EADDRINUSE when the range or the attempt budget is exhausted', () => {
    expect(() => allocateCid(() => false, { from: 10, to: 12 })).toThrow(
      expect.objectContaining({ code: 'EADDRINUSE', message: expect.stringContaining('from 10 to 12') }),
    )
    let calls = 0
    expect(() =>
      allocateCid(
        () => {
          calls++
          return false
        },
        { maxAttempts: 100 },
      ),
    ).toThrow(expect.objectContaining({ code: 'EADDRINUSE' }))
    expect(calls).toBe(100)
  })

  test('refuses the reserved CIDs 0, 1, 2 and non-integers as a start', () => {
    for (const from of [0, 1, 2, 3.5, -1, 2 ** 32]) expect(() => allocateCid(() => true, { from })).toThrow(RangeError)
    expect(FIRST_GUEST_CID).toBe(3)
  })

  // 16 processes x 500 allocations against a file-based "kernel" (O_EXCL create = reserve).
  test('16 processes x 500 held allocations: 8000 distinct CIDs, exactly 3..8002', { timeout: 120_000 }, async () => {
    assertDistFresh()
    const { dir, results } = await runWorkers(16, 500, 'hold')
    const all = results.flatMap((r) => r.allocated)
    expect(all).toHaveLength(8000)
    expect(new Set(all).size).toBe(8000)
    const sorted = [...all].sort((a, b) => a - b)
    expect(sorted[0]).toBe(3)
    expect(sorted.at(-1)).toBe(8002)
    // Every file in the "kernel" belongs to the process that reported it.
    const owner = new Map(results.flatMap((r) => r.allocated.map((c) => [c, String(r.pid)] as const)))
    for (const f of readdirSync(dir).filter((f) => /^\d+$/.test(f))) expect(readFileSync(join(dir, f), 'utf8')).toBe(owner.get(Number(f)))
  })

  test('16 processes x 500 allocations from 3 with releases: no CID is ever held twice', { timeout: 120_000 }, async () => {
    assertDistFresh()
    const { dir, results } = await runWorkers(16, 500, 'churn')
    expect(results.flatMap((r) => r.allocated)).toHaveLength(8000)
    // The log is in kernel order: per CID it must read A R A R ..., each R by the A's process.
    const holder = new Map<number, string>()
    let events = 0
    for (const line of readFileSync(join(dir, 'log'), 'utf8').split('\n').filter(Boolean)) {
      const [op, cidText, pid] = line.split(' ') as [string, string, string]
      const cid = Number(cidText)
      events++
      if (op === 'A') {
        expect(holder.has(cid), `CID ${cid} reserved by ${pid} while ${holder.get(cid)} held it`).toBe(false)
        holder.set(cid, pid)
      } else {
        expect(holder.get(cid)).toBe(pid)
        holder.delete(cid)
      }
    }
    expect(events).toBe(16_000)
    expect(holder.size).toBe(0)
    // With at most 16 x 5 held at once, the search never needs to go past 3 + 80.
    expect(Math.max(...results.flatMap((r) => r.allocated))).toBeLessThan(3 + 16 * 5)
  })
})
