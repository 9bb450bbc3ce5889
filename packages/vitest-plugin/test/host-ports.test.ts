import { mkdtempSync, realpathSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { HarnessError, type BootPlan } from '@stereos/harness'
import { describe, expect, test } from 'vitest'
import { PoolContext } from '../src/pool/context.js'
import { parseStereosOptions } from '../src/options.js'
import { sandboxOptionsInFile } from '../src/pool/file-options.js'
import { VmLeasePool } from '../src/pool/lease-pool.js'
import { suiteSandboxOptions } from '../src/pool/suite-options.js'
import type { PoolVm } from '../src/pool/vm.js'
import { FakeVm } from './support/fake-vm.js'

// network.hostPorts is the project's (trusted) config: a list, or a function the pool asks when
// it leases a VM. A test file may not declare host ports.
const dir = realpathSync(mkdtempSync(join(tmpdir(), 'plugin-host-ports-')))
let n = 0

function testFile(options: string | undefined): string {
  const path = join(dir, `f${++n}.test.ts`)
  const body = options === undefined ? `test('t', () => {})` : `describe.sandbox('s', ${options}, () => {})`
  writeFileSync(path, `import { describe, test } from '@stereos/vitest-plugin'\n\n${body}\n`)
  return path
}

/** A context whose pool records the options each VM is booted with. */
function context(projectOptions: Record<string, unknown>, provided: Record<string, unknown> = {}) {
  const boots: BootPlan[] = []
  const pool = new VmLeasePool<PoolVm>(4, async (options) => {
    boots.push(options)
    return new FakeVm()
  })
  const ctx = new PoolContext(pool, parseStereosOptions(projectOptions, 'stereos'), { roots: [dir], project: dir }, dir, () => provided)
  return { ctx, pool, boots }
}

describe('network.hostPorts in the plugin', () => {
  test('describe.sandbox may not set it: refused, naming the file, line and stereos() as the place', () => {
    const path = testFile(`{ network: { mode: 'nat', hostPorts: [5432] } }`)
    let err: unknown
    try {
      suiteSandboxOptions(path, sandboxOptionsInFile(path), [])
    } catch (caught) {
      err = caught
    }
    expect(err).toBeInstanceOf(HarnessError)
    const refusal = err as HarnessError
    expect(refusal.code).toBe('INVALID_OPTIONS')
    expect(refusal.message).toMatch(
      new RegExp(`^${path}:3: describe\\.sandbox option network\\.hostPorts is refused: it lets the guest reach services on the host's 127\\.0\\.0\\.1`),
    )
    expect(refusal.fix).toMatch(/^set network\.hostPorts in the project's stereos\(\) options in vitest\.config/)
  })

  test('a list: booted with those ports', async () => {
    const { ctx, boots } = context({ network: { hostPorts: [5432] } })
    await ctx.lease(ctx.plan([testFile(undefined)]))
    expect(boots.map((b) => b.network?.hostPorts)).toEqual([[5432]])
  })

  test('a function: asked at lease time with what globalSetup provided; its answer is what the VM reaches', async () => {
    const asked: unknown[] = []
    const provided = { db: { port: 6000 } }
    const { ctx, boots } = context(
      {
        network: {
          hostPorts: async (context: { provided: { db: { port: number } } }) => {
            asked.push(context.provided)
            return [context.provided.db.port]
          },
        },
      },
      provided,
    )
    const plan = ctx.plan([testFile(undefined)])
    expect(asked).toEqual([])
    await ctx.lease(plan)
    expect(asked).toEqual([provided])
    expect(boots.map((b) => b.network?.hostPorts)).toEqual([[6000]])
  })

  test('a different answer leases a different VM; the same answer reuses it', async () => {
    let port = 7000
    const { ctx, pool, boots } = context({ network: { hostPorts: () => [port] } })
    const plan = ctx.plan([testFile(undefined)])
    const first = await ctx.lease(plan)
    await pool.release(first)
    const again = await ctx.lease(plan)
    expect(again).toBe(first)
    await pool.release(again)
    port = 7001
    const other = await ctx.lease(plan)
    expect(other).not.toBe(first)
    expect(boots.map((b) => b.network?.hostPorts)).toEqual([[7000], [7001]])
  })

  test("a function's bad answer: an options error naming the function, before any boot", async () => {
    const { ctx, boots } = context({ network: { hostPorts: () => [5432, 'x'] } })
    await expect(ctx.lease(ctx.plan([testFile(undefined)]))).rejects.toThrow(/stereos\.network\.hostPorts\(\)\.1: /)
    expect(boots).toEqual([])
  })

  test("the project's mode 'none' with hostPorts: refused as a contradiction, when the options are parsed (once, before any file)", () => {
    expect(() => context({ network: { mode: 'none', hostPorts: () => [5432] } })).toThrow(
      /stereos\.network\.hostPorts: network\.mode 'none' reaches no host port/,
    )
  })

  test("a file asking for mode 'none' gets no host ports (none means none)", async () => {
    const { ctx, boots } = context({ network: { hostPorts: () => [5432] } })
    await ctx.lease(ctx.plan([testFile(`{ network: { mode: 'none' } }`)]))
    expect(boots.map((b) => b.network)).toEqual([{ mode: 'none', forwards: [], hostPorts: [] }])
  })
})
