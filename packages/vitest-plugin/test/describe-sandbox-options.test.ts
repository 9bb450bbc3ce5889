import { mkdtempSync, realpathSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { HarnessError, isBootPlan } from '@stereos/harness'
import { describe, expect, test } from 'vitest'
import { PoolContext } from '../src/pool/context.js'
import { parseStereosOptions } from '../src/options.js'
import { sandboxOptionsInFile } from '../src/pool/file-options.js'
import { VmLeasePool } from '../src/pool/lease-pool.js'
import { suiteSandboxOptions } from '../src/pool/suite-options.js'

// Test files are untrusted: describe.sandbox may set only the guest's shape. Every case below is
// a real file on disk, read by the same parser the pool uses.
const dir = realpathSync(mkdtempSync(join(tmpdir(), 'describe-sandbox-options-')))
let n = 0

/** A test file whose describe.sandbox options are `options` (source text), starting on line 3. */
function file(options: string): string {
  const path = join(dir, `f${++n}.test.ts`)
  writeFileSync(path, `import { describe } from '@stereos/vitest-plugin'\n\ndescribe.sandbox('s', ${options}, () => {})\n`)
  return path
}

/** The error checking `path`'s options against the project's secret names throws (fails the test if none). */
function refusal(path: string, projectSecrets: string[] = []): HarnessError {
  try {
    suiteSandboxOptions(path, sandboxOptionsInFile(path), projectSecrets)
  } catch (err) {
    if (err instanceof HarnessError) return err
    throw err
  }
  throw new Error(`no error for ${path}`)
}

function context(projectOptions: Record<string, unknown>): PoolContext {
  const pool = new VmLeasePool(1, async () => {
    throw new Error('plan() must not boot')
  })
  return new PoolContext(pool, parseStereosOptions(projectOptions, 'stereos'), { roots: [dir], project: dir }, dir)
}

describe('describe.sandbox refuses options that reach the host', () => {
  const hostSide: [string, string][] = [
    ['shared', `[{ host: '/home/u', guest: '/mnt' }]`],
    ['qemuBinary', `'./x.sh'`],
    ['runtimeDir', `'/tmp/x'`],
    ['mixtape', `'./my-mixtape'`],
    ['jcard', `'[mixtape]'`],
    ['keepVm', `'on-failure'`],
    ['attachmentMaxBytes', '1'],
    ['accel', `'tcg'`],
    ['controlPlane', `'tcp'`],
    ['bootstrap', `'agentd'`],
    ['template', `'off'`],
    ['detachable', 'true'],
    ['keepOnFailure', 'true'],
    ['arch', `'aarch64'`],
  ]
  for (const [key, value] of hostSide) {
    test(`${key}: refused, naming the key, file and line, and stereos() as where it goes`, () => {
      // The key sits on line 4, below the call on line 3: the error names the key's line.
      const path = file(`{\n  ${key}: ${value},\n}`)
      const err = refusal(path)
      expect(err.code).toBe('INVALID_OPTIONS')
      expect(err.message).toContain(`${path}:4: describe.sandbox option ${key} is refused`)
      expect(err.fix).toBe(
        `set ${key} in the project's stereos() options in vitest.config (the config is yours and trusted; it applies to every test file of the project)`,
      )
    })
  }

  test('network.forwards: refused, while network.mode is allowed', () => {
    const path = file(`{ network: { mode: 'none', forwards: [{ host: 5353, guest: 53, proto: 'udp' }] } }`)
    const err = refusal(path)
    expect(err.message).toMatch(new RegExp(`^${path}:3: describe\\.sandbox option network\\.forwards is refused: it opens host ports`))
    expect(err.fix).toMatch(/^set network\.forwards in the project's stereos\(\) options in vitest\.config/)
    expect(suiteSandboxOptions(path, sandboxOptionsInFile(file(`{ network: { mode: 'none' } }`)), [])).toEqual({ network: { mode: 'none' } })
  })

  test('a key no schema knows is refused as not an option; every refused key of a file is named', () => {
    const path = file(`{\n  shared: [],\n  resources: { cpus: 2, gpus: 1 },\n  whatever: 1,\n}`)
    const err = refusal(path)
    expect(err.message.split('\nFix: ')[0]?.split('\n')).toEqual([
      expect.stringContaining(`${path}:4: describe.sandbox option shared is refused`),
      expect.stringContaining(`${path}:5: describe.sandbox option resources.gpus is not an option describe.sandbox takes`),
      expect.stringContaining(`${path}:6: describe.sandbox option whatever is not an option describe.sandbox takes`),
    ])
    expect(err.fix).toContain('remove whatever from the describe.sandbox options')
  })

  test('process.env is refused everywhere: in env, in secrets, in any option, inside expressions', () => {
    for (const [options, option, read] of [
      [`{ env: { MODE: process.env.MODE } }`, 'env.MODE', 'process.env.MODE'],
      [`{ secrets: { T: process.env['GITHUB_TOKEN'] } }`, 'secrets.T', 'process.env.GITHUB_TOKEN'],
      [`{ resources: { memory: process.env.MEM ?? '1GiB' } }`, 'resources.memory', 'process.env.MEM'],
      ['{ env: { X: `a${process.env.HOME}` } }', 'env.X', 'process.env.HOME'],
      [`{ env: process.env }`, 'env', 'process.env…'],
    ] as const) {
      const path = file(options)
      // Refused while reading the file, before any check of keys: the value never leaves the host's env.
      expect(() => sandboxOptionsInFile(path), options).toThrow(HarnessError)
      const err = refusal(path)
      expect(err.code).toBe('INVALID_OPTIONS')
      expect(err.message).toContain(`${path}:3: describe.sandbox option ${option} reads ${read}: a test file may not copy host values into its VM`)
      expect(err.fix).toMatch(
        /stereos\(\{ env: \{ .+ \} \}\) for a variable, or stereos\(\{ secrets: .+ \}\) for a secret, named in the file as describe\.sandbox\(name, \{ secrets: \[/,
      )
    }
  })

  test('a secret name the project does not have is refused, naming it and the line', () => {
    const path = file(`{ secrets: [\n  'API_KEY',\n  'GITHUB_TOKEN',\n] }`)
    const err = refusal(path, ['API_KEY'])
    expect(err.message).toBe(
      `${path}:5: describe.sandbox secret GITHUB_TOKEN is not one of the project's secrets (stereos({ secrets }): it has API_KEY)\nFix: ${err.fix}`,
    )
    expect(err.fix).toContain('stereos({ secrets: { GITHUB_TOKEN: process.env.GITHUB_TOKEN } })')
    expect(refusal(path).message).toContain("API_KEY is not one of the project's secrets (stereos({ secrets }): it has none)")
  })

  test('the old secrets object (name: value) and non-string env values are invalid, with the path', () => {
    const err = refusal(file(`{ secrets: { T: 'x' }, env: { N: 1 } }`))
    expect(err.message).toMatch(
      /^Invalid describe\.sandbox options:\n {2}describe\.sandbox options in .*:3\.env\.N: .*expected string[\s\S]*:3\.secrets: .*expected array/,
    )
  })
})

describe('an allowed file plans its VM from the project options and its own', () => {
  const project = { mixtape: 'fixture', resources: { cpus: 2 }, secrets: { API_KEY: 'k1', OTHER: 'k2' }, env: { FROM_CONFIG: 'c' } }

  test('the guest shape applies on top of the project, key by key; the plan key changes with it', () => {
    const ctx = context(project)
    const plain = ctx.plan([file(`{}`)])
    const path = file(
      `{ resources: { memory: '1GiB' }, isolation: 'vm', network: { mode: 'none' }, bootTimeoutMs: 5000, agentTimeoutMs: 6000, env: { MODE: 'x' } }`,
    )
    const sized = ctx.plan([path])
    expect(sized.boot).toMatchObject({
      mixtape: 'fixture',
      resources: { cpus: 2, memory: 1024 ** 3 },
      network: { mode: 'none', forwards: [] },
      bootTimeoutMs: 5000,
      agentTimeoutMs: 6000,
      secrets: { API_KEY: 'k1', OTHER: 'k2' },
    })
    // A plan Sandbox.boot takes as it is (no parse), sized in MiB for QEMU; the project's cpus kept.
    expect(isBootPlan(sized.boot)).toBe(true)
    expect(sized.boot.memoryMiB).toBe(1024)
    expect(sized.options.isolation).toBe('vm')
    expect(sized.options.env).toEqual({ FROM_CONFIG: 'c', MODE: 'x' })
    expect(sized.key).not.toBe(plain.key)
    expect(ctx.plan([file(`{ resources: { memory: '1GiB' } }`)]).key).not.toBe(plain.key)
    // Same options, same key: such files share warm VMs.
    expect(ctx.plan([file(`{}`)]).key).toBe(plain.key)
  })

  test('a file that names secrets gets only those; one that names none gets all of the project', () => {
    const ctx = context(project)
    expect(ctx.plan([file(`{ secrets: ['API_KEY'] }`)]).boot.secrets).toEqual({ API_KEY: 'k1' })
    expect(ctx.plan([file(`{ secrets: [] }`)]).boot.secrets).toEqual({})
    expect(ctx.plan([file(`{ resources: { cpus: 1 } }`)]).boot.secrets).toEqual({ API_KEY: 'k1', OTHER: 'k2' })
    const two = join(dir, 'two.test.ts')
    writeFileSync(two, `describe.sandbox('a', { secrets: ['OTHER'] }, () => {})\ndescribe.sandbox('b', { secrets: ['API_KEY'] }, () => {})\n`)
    expect(ctx.plan([two]).boot.secrets).toEqual({ API_KEY: 'k1', OTHER: 'k2' })
    expect(ctx.plan([file(`{ secrets: ['API_KEY'] }`)]).key).not.toBe(ctx.plan([file(`{}`)]).key)
  })

  test('project options a file may not set still apply to its VM', () => {
    const ctx = context({ ...project, shared: [{ host: dir, guest: '/data', readonly: true }], network: { forwards: [{ host: 8080, guest: 80 }] } })
    const plan = ctx.plan([file(`{ network: { mode: 'none' } }`)])
    expect(plan.boot.shared).toEqual([{ host: dir, guest: '/data', readonly: true }])
    expect(plan.boot.network).toEqual({ mode: 'none', forwards: [{ host: 8080, guest: 80, proto: 'tcp' }], hostPorts: [] })
  })

  test('a refused option fails plan(), so the pool fails that file (and boots nothing for it)', () => {
    const ctx = context(project)
    const path = file(`{ qemuBinary: './x.sh' }`)
    expect(() => ctx.plan([path])).toThrow(`${path}:3: describe.sandbox option qemuBinary is refused`)
    expect(() => ctx.plan([file(`{ secrets: ['NOPE'] }`)])).toThrow(/describe\.sandbox secret NOPE is not one of the project's secrets/)
    // Values a file may set are still checked, naming the file and line.
    expect(() => ctx.plan([file(`{ resources: { cpus: 0 } }`)])).toThrow(/describe\.sandbox options in .*f\d+\.test\.ts:3\.resources\.cpus: Too small/)
  })
})
