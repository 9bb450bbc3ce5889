import { HarnessError } from '@stereos/harness'
import { StereosOptions, SuiteSandboxOptions } from '../options.js'
import type { FileOptions } from './file-options.js'

/**
 * What a test file's describe.sandbox options may change: the shape of its guest, checked
 * against the narrow SuiteSandboxOptions schema. Test files are untrusted, so an option that
 * reaches the host (a shared host dir, a QEMU binary, a host port, a host path) is refused,
 * naming the option, file and line, and where it belongs instead: the project's stereos()
 * options, which the user owns.
 */

/** Why a host-side option is not a test file's to set (shown in the refusal). */
const HOST_SIDE: Record<string, string> = {
  mixtape: 'picks the guest image: a host directory, or a registry reference the host pulls',
  arch: "picks the host's QEMU binary (qemu-system-<arch>)",
  accel: "picks the host's accelerator (KVM or TCG)",
  controlPlane: 'picks how the host talks to the VM',
  shared: 'shares host directories into the VM',
  jcard: "replaces the VM's whole stereOS config (mounts, secrets, resources)",
  bootstrap: 'picks how the host starts the guest agent',
  keepOnFailure: 'keeps VM directories on the host disk',
  detachable: 'lets QEMU outlive the run on the host',
  template: 'picks what the host saves and restores',
  runtimeDir: 'names a host directory the harness writes to',
  qemuBinary: 'names a program the host runs',
  keepVm: 'keeps VMs running on the host after the run',
  attachmentMaxBytes: 'sets how much guest data the host takes in',
  'network.forwards': "opens host ports into the VM (a UDP forward puts QEMU in the host's network namespace)",
  'network.hostPorts': "lets the guest reach services on the host's 127.0.0.1",
}

const ALLOWED = 'resources, isolation, network.mode, bootTimeoutMs, agentTimeoutMs, env (literal values), secrets (names)'

/** Whether `path` names an option of the project's stereos() (so it has a place to go). */
function isProjectOption(path: string): boolean {
  return path === 'network.forwards' || path === 'network.hostPorts' || Object.hasOwn(StereosOptions.shape, path)
}

interface Refusal {
  line: number
  message: string
  fix: string
}

function refusal(at: string, path: string): Omit<Refusal, 'line'> {
  const why = HOST_SIDE[path]
  if (isProjectOption(path)) {
    return {
      message: `${at}: describe.sandbox option ${path} is refused: it ${why ?? "is not part of the guest's shape"}; test files are untrusted, so describe.sandbox sets only ${ALLOWED}`,
      fix: `set ${path} in the project's stereos() options in vitest.config (the config is yours and trusted; it applies to every test file of the project)`,
    }
  }
  return {
    message: `${at}: describe.sandbox option ${path} is not an option describe.sandbox takes (${ALLOWED})`,
    fix: `remove ${path} from the describe.sandbox options; see the describe.sandbox table in the README`,
  }
}

function dotted(path: readonly PropertyKey[]): string {
  return path.map((p, i) => (typeof p === 'number' ? `[${p}]` : `${i ? '.' : ''}${String(p)}`)).join('')
}

/**
 * The describe.sandbox options of a file, checked and merged in source order (later calls win;
 * resources, network and env merge key by key; secret names add up), or an INVALID_OPTIONS
 * error naming every offending option with its file and line. `projectSecrets`: the names of the
 * project's stereos({ secrets }), the only ones a file may name.
 */
export function suiteSandboxOptions(file: string, found: readonly FileOptions[], projectSecrets: readonly string[]): SuiteSandboxOptions {
  const refused: Refusal[] = []
  const invalid: { line: number; text: string }[] = []
  let merged: SuiteSandboxOptions = {}
  for (const { options, line, lines } of found) {
    const lineOf = (path: string) => `${file}:${lines[path] ?? line}`
    const at = (path: string) => lines[path] ?? line
    const result = SuiteSandboxOptions.safeParse(options)
    for (const issue of result.success ? [] : result.error.issues) {
      if (issue.code === 'unrecognized_keys') {
        for (const key of issue.keys) {
          const path = dotted([...issue.path, key])
          refused.push({ line: at(path), ...refusal(lineOf(path), path) })
        }
      } else {
        const path = dotted(issue.path)
        invalid.push({ line: at(path), text: `  describe.sandbox options in ${lineOf(path)}${path ? `.${path}` : ''}: ${issue.message}` })
      }
    }
    if (!result.success) continue
    const suite = options as SuiteSandboxOptions
    suite.secrets?.forEach((name, i) => {
      if (projectSecrets.includes(name)) return
      const known = projectSecrets.length ? `it has ${projectSecrets.join(', ')}` : 'it has none'
      refused.push({
        line: at(`secrets[${i}]`),
        message: `${lineOf(`secrets[${i}]`)}: describe.sandbox secret ${name} is not one of the project's secrets (stereos({ secrets }): ${known})`,
        fix: `add ${name} to the project's stereos({ secrets: { ${name}: process.env.${name} } }) in vitest.config, or remove it from describe.sandbox secrets`,
      })
    })
    merged = overlay(merged, suite)
  }
  // In source order, as the reader fixes them.
  refused.sort((a, b) => a.line - b.line)
  invalid.sort((a, b) => a.line - b.line || a.text.localeCompare(b.text))
  if (refused.length) {
    throw new HarnessError('INVALID_OPTIONS', refused.map((r) => r.message).join('\n'), { fix: [...new Set(refused.map((r) => r.fix))].join('; ') })
  }
  if (invalid.length) {
    throw new HarnessError('INVALID_OPTIONS', `Invalid describe.sandbox options:\n${invalid.map((i) => i.text).join('\n')}`, {
      fix: `correct the option(s) named above; describe.sandbox takes ${ALLOWED} (see the README)`,
    })
  }
  return merged
}

/**
 * `over` on top of `base`: resources, network and env key by key (a file that asks for more
 * memory keeps the project's cpus; network.mode keeps the project's forwards), secret names
 * added up, anything else replaced.
 */
export function overlay<T extends Record<string, unknown>>(base: T, over: SuiteSandboxOptions): T {
  const out: Record<string, unknown> = { ...base }
  for (const [key, value] of Object.entries(over)) {
    if (value === undefined) continue
    const before = base[key]
    if (key === 'secrets') out[key] = [...new Set([...((before as string[] | undefined) ?? []), ...(value as string[])])]
    else if (['resources', 'network', 'env'].includes(key) && typeof before === 'object' && before !== null) out[key] = { ...before, ...(value as object) }
    else out[key] = value
  }
  return out as T
}
