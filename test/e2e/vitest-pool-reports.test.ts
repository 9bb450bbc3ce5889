import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, test } from 'vitest'
import { repoRoot, vitestCli } from './support.js'
import type { CommandResult } from './support.js'

const VITEST5 = join(repoRoot, 'node_modules', 'vitest', 'vitest.mjs')
const VITEST4 = join(repoRoot, 'fixtures', 'projects', 'vitest4', 'node_modules', 'vitest', 'vitest.mjs')

interface JsonReport {
  numFailedTestSuites: number
  testResults: { name: string; status: string; message: string; assertionResults: { fullName: string; status: string }[] }[]
}

interface Annotated {
  file: string
  state: string
  errors: string[]
  tests: { name: string; state: string; annotations: { message: string; path?: string; body?: string }[] }[]
}

/** The real vitest CLI (`run` or `--merge-reports`), as a user runs it; never throws on test failures. */
function vitest(cli: string, cwd: string, args: string[], env: Record<string, string> = {}): Promise<CommandResult> {
  return vitestCli(cwd, args, env, cli)
}

describe('reports under --pool=stereos (real vitest CLI, fixture VMs)', () => {
  const out = mkdtempSync(join(tmpdir(), 'sh-pool-reports-'))
  afterAll(() => rmSync(out, { recursive: true, force: true }))

  test('a file whose VM cannot be had (invalid describe.sandbox options, a boot timeout) is a failed file with the reason in the summary, JSON and junit; the run goes on (#13.2)', async () => {
    const dir = join(repoRoot, 'fixtures', 'projects', 'unusable')
    const json = join(out, 'unusable.json')
    const junit = join(out, 'unusable.xml')
    const { code, output } = await vitest(VITEST5, dir, [
      'run',
      '--pool=stereos',
      '--reporter=default',
      '--reporter=json',
      '--reporter=junit',
      `--outputFile.json=${json}`,
      `--outputFile.junit=${junit}`,
    ])
    expect(code).toBe(1)
    expect(output).not.toMatch(/Unhandled Error|emitted error/)
    expect(output).toMatch(/FAIL\s+a-bad-options\.test\.ts[\s\S]*a-bad-options\.test\.ts:5\.resources\.cpus: Too small[\s\S]*Fix: /)
    expect(output).toMatch(/FAIL\s+b-boot-timeout\.test\.ts[\s\S]*did not become ready within 1 ms[\s\S]*Fix: /)
    expect(output).toMatch(/Test Files\s+2 failed \| 1 passed \(3\)/)
    const report = JSON.parse(readFileSync(json, 'utf8')) as JsonReport
    const byFile = Object.fromEntries(report.testResults.map((r) => [r.name.split('/').pop(), r]))
    expect(byFile['a-bad-options.test.ts']?.status).toBe('failed')
    expect(byFile['a-bad-options.test.ts']?.message).toMatch(/resources\.cpus: Too small[\s\S]*Fix: correct the option/)
    expect(byFile['b-boot-timeout.test.ts']?.status).toBe('failed')
    expect(byFile['b-boot-timeout.test.ts']?.message).toMatch(/BOOT_TIMEOUT|did not become ready/)
    expect(byFile['c-ok.test.ts']?.status).toBe('passed')
    const xml = readFileSync(junit, 'utf8')
    expect(xml).toMatch(/<testsuite name="a-bad-options\.test\.ts"[^>]*failures="1"/)
    expect(xml).toMatch(/<testsuite name="b-boot-timeout\.test\.ts"[^>]*failures="1"/)
    // The boot that timed out was retried once, with one line saying so.
    expect(output).toMatch(/a VM boot failed \(.*\); booting once more/)
  }, 600_000)

  test('the same under Vitest 4.1: files whose VM cannot be had fail as files (#13.2)', async () => {
    const dir = join(repoRoot, 'fixtures', 'projects', 'unusable')
    const junit = join(out, 'unusable4.xml')
    const { code, output } = await vitest(VITEST4, dir, [
      'run',
      'a-bad-options.test.ts',
      'b-boot-timeout.test.ts',
      '--pool=stereos',
      '--reporter=default',
      '--reporter=junit',
      `--outputFile.junit=${junit}`,
    ])
    expect(code).toBe(1)
    expect(output).toMatch(/RUN\s+v4\.1\.\d+/)
    expect(output).not.toMatch(/Unhandled Error|emitted error/)
    expect(output).toMatch(/Test Files\s+2 failed \(2\)/)
    const xml = readFileSync(junit, 'utf8')
    expect(xml).toMatch(/<testsuite name="a-bad-options\.test\.ts"[^>]*failures="1"/)
    expect(xml).toMatch(/<testsuite name="b-boot-timeout\.test\.ts"[^>]*failures="1"/)
  }, 600_000)

  test('--shard + --reporter=blob + --merge-reports: the merged report carries the VM logs as bodies, and file-level failures carry the VM console (#13.7)', async () => {
    const dir = join(repoRoot, 'fixtures', 'projects', 'sharded')
    const blobs = join(out, 'blobs')
    for (const shard of ['1/2', '2/2']) {
      const { output } = await vitest(VITEST5, dir, [
        'run',
        '--pool=stereos',
        `--shard=${shard}`,
        '--reporter=blob',
        `--outputFile=${join(blobs, `blob-${shard.replace('/', '-')}.json`)}`,
      ])
      expect(output).not.toMatch(/Unhandled Error/)
    }
    const annotations = join(out, 'merged.json')
    const merged = await vitest(VITEST5, dir, ['--merge-reports', blobs, '--reporter=default', '--reporter=./annotations-reporter.ts'], {
      ANNOTATIONS_OUT: annotations,
    })
    expect(merged.code).toBe(1)
    const files = Object.fromEntries((JSON.parse(readFileSync(annotations, 'utf8')) as Annotated[]).map((f) => [f.file, f]))
    const failed = files['a-fails.test.ts']?.tests.find((t) => t.name === 'fails on purpose')
    expect(failed?.state).toBe('failed')
    const serial = failed?.annotations.find((a) => /serial console/.test(a.message))
    expect(serial?.path).toBeUndefined()
    // The guest's console, from the shard's VM, inside the merged report.
    expect(serial?.body).toMatch(/stereosd/)
    expect(failed?.annotations.some((a) => /boot timeline: .*agent-ready/.test(a.message))).toBe(true)
    // qemu.log is QEMU's stderr: empty on a clean run, and then not attached.
    expect(failed?.annotations.some((a) => /qemu\.log/.test(a.message) && !a.body)).toBe(false)
    for (const file of ['b-before-all.test.ts', 'c-import-error.test.ts']) {
      expect(files[file]?.state).toBe('failed')
      expect(files[file]?.errors.join('\n')).toMatch(/this file ran in VM vm-\S+ \(x86_64, \w+, fixture\); last lines of its serial console:/)
    }
    expect(files['b-before-all.test.ts']?.errors.join('\n')).toMatch(/beforeAll failed on purpose/)
    expect(files['c-import-error.test.ts']?.errors.join('\n')).toMatch(/does-not-exist/)
  }, 900_000)
})
