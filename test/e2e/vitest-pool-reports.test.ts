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

  test('--shard + --reporter=blob + --merge-reports: a failure carries what the guest printed while its file ran, bounded, in the terminal, JSON, junit and the merged report (#13.7, #20.5)', async () => {
    const dir = join(repoRoot, 'fixtures', 'projects', 'sharded')
    const blobs = join(out, 'blobs')
    const attachments = join(dir, '.vitest', 'attachments', 'stereos')
    rmSync(attachments, { recursive: true, force: true })
    let terminal = ''
    for (const shard of ['1/2', '2/2']) {
      const { output } = await vitest(VITEST5, dir, [
        'run',
        '--pool=stereos',
        `--shard=${shard}`,
        '--reporter=default',
        '--reporter=blob',
        `--outputFile.blob=${join(blobs, `blob-${shard.replace('/', '-')}.json`)}`,
      ])
      expect(output).not.toMatch(/Unhandled Error/)
      terminal += output
    }
    // The terminal names the excerpt's host copy and shows its last lines.
    const path = /what the guest printed while this file ran, \d+ bytes in (\S+\.log); last lines:/.exec(terminal)?.[1]
    expect(path).toBeDefined()
    expect(path?.startsWith(attachments)).toBe(true)
    expect(terminal).toMatch(/ {4}guest worker stderr \(last \d+ of \d+ bytes\):\n(.*\n)* {6}GUEST-STDERR-MARKER-a-fails/)
    const annotations = join(out, 'merged.json')
    const json = join(out, 'merged-report.json')
    const junit = join(out, 'merged-report.xml')
    const merged = await vitest(
      VITEST5,
      dir,
      [
        '--merge-reports',
        blobs,
        '--reporter=default',
        '--reporter=./annotations-reporter.ts',
        '--reporter=json',
        '--reporter=junit',
        `--outputFile.json=${json}`,
        `--outputFile.junit=${junit}`,
      ],
      { ANNOTATIONS_OUT: annotations },
    )
    expect(merged.code).toBe(1)
    const files = Object.fromEntries((JSON.parse(readFileSync(annotations, 'utf8')) as Annotated[]).map((f) => [f.file, f]))
    const failed = files['a-fails.test.ts']?.tests.find((t) => t.name === 'fails on purpose')
    expect(failed?.state).toBe('failed')
    const excerpt = failed?.annotations.find((a) => /what the guest printed while this file ran/.test(a.message))
    expect(excerpt?.path).toBeUndefined()
    // The guest's output, from the shard's VM, inside the merged report: this file's stderr, bounded (its start fell off).
    expect(excerpt?.body).toMatch(/^VM vm-\S+ \(x86_64, \w+, fixture\): what the guest printed while \S*a-fails\.test\.ts ran/)
    expect(excerpt?.body).toContain('GUEST-STDERR-MARKER-a-fails')
    expect(excerpt?.body).not.toContain('EARLY-STDERR-LINE')
    expect(Buffer.byteLength(excerpt?.body ?? '')).toBeLessThanOrEqual(65 * 1024)
    expect(readFileSync(path as string, 'utf8')).toBe(excerpt?.body)
    expect(failed?.annotations.some((a) => /boot timeline: .*agent-ready/.test(a.message))).toBe(true)
    // JSON: the failed test's meta names the excerpt and carries its last lines.
    const report = JSON.parse(readFileSync(json, 'utf8')) as {
      testResults: { name: string; assertionResults: { title: string; meta: { stereosVmLog?: { path: string; lastLines: string } } }[] }[]
    }
    const jsonTest = report.testResults.find((r) => r.name.endsWith('a-fails.test.ts'))?.assertionResults.find((t) => t.title === 'fails on purpose')
    expect(jsonTest?.meta.stereosVmLog?.path).toBe(path)
    expect(jsonTest?.meta.stereosVmLog?.lastLines).toContain('GUEST-STDERR-MARKER-a-fails')
    // junit: the annotation's message (path and last lines) is a property of the test case.
    expect(readFileSync(junit, 'utf8')).toMatch(/<property name="stereos" value="VM vm-\S+ [^"]*GUEST-STDERR-MARKER-a-fails/)
    for (const file of ['b-before-all.test.ts', 'c-import-error.test.ts']) {
      expect(files[file]?.state).toBe('failed')
      expect(files[file]?.errors.join('\n')).toMatch(/VM vm-\S+ \(x86_64, \w+, fixture\): what the guest printed while this file ran, \d+ bytes in \S+\.log/)
      expect(files[file]?.errors.join('\n')).not.toContain('GUEST-STDERR-MARKER-a-fails')
    }
    expect(files['b-before-all.test.ts']?.errors.join('\n')).toMatch(/beforeAll failed on purpose/)
    expect(files['c-import-error.test.ts']?.errors.join('\n')).toMatch(/does-not-exist/)
    rmSync(attachments, { recursive: true, force: true })
  }, 900_000)
})
