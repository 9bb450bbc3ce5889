#!/usr/bin/env node
// First: on too old a Node, the rest of the CLI would fail at import with an unrelated error.
import './node-check.js'
import { parseArgs } from 'node:util'
import { Arch } from '../config/options.js'
import { HarnessError } from '../errors.js'
import { hostArch } from '../host/arch.js'
import { log } from '../log.js'
import { bootCommand } from './boot.js'
import { debugCommand } from './debug.js'
import { doctorCommand } from './doctor.js'
import { keptCommand, sshCommand, stopCommand } from './kept.js'
import { lsCommand } from './ls.js'
import { pruneCommand } from './prune.js'
import type { TemplatePruneScope } from '../template/store.js'
import { pullCommand } from './pull.js'
import { rmCommand } from './rm.js'
import { runCommand } from './run.js'
import { shareCommand } from './share.js'
import { templatesCommand } from './templates.js'

const USAGE = `Usage: stereos-harness <command> [options]

Commands:
  doctor [--mixtape REF] [--arch A] [--json]       check what this host can boot, with fixes; with --mixtape, also
                                                   boot REF once and check what the harness needs in it
  boot --mixtape REF [--arch A] [--json] [--keep]  boot a sandbox, print its boot timeline and health, shut down
  run [--mixtape REF] [--arch A] [--bootstrap agentd|ssh] [--keep] -- CMD [ARGS...]
                                                   boot, run CMD in the guest (output streamed), shut down,
                                                   exit with CMD's exit code
  share [--arch A]... [--json]                     prepare the harness share (guest Node, agent) ahead of boots
  pull REF [--arch A] [--json] [--force]           pull a mixtape into mb's cache (checks the registry for a newer one)
  ls [--templates] [--json]                        list the mixtapes in mb's cache (or the VM templates in the harness cache)
  rm NAME[:TAG] [--json]                           remove a cached mixtape (every tag without :TAG), and blobs only it used
  prune [--templates | --unused-since T] [--json]  remove unused blobs, partial downloads, leftovers of dead pulls and
                                                   template saves, stale VM templates (--templates: every template;
                                                   --unused-since: also those no boot used since T, ISO 8601 or Unix s)
  kept [--json]                                    list VMs kept running after their run (Vitest pool keepVm)
  ssh ID [-- CMD [ARGS...]]                        a shell (or CMD) in a kept VM, as admin
  stop ID [--json]                                 stop a kept VM and remove its directory
  debug CAPTURE [--exec CMD | --rerun [--inspect-brk] [--inspect-port N]] [--checkout DIR] [--keep] [--extract DIR]
                                                   restore a captured VM (Sandbox.capture, Vitest pool capture) here:
                                                   a shell, or CMD (exit status: CMD's); a pool capture gets the local
                                                   checkout (--checkout, default .) where the project was, and its
                                                   shell runs as the test user; --rerun runs the failing file again
                                                   under Vitest, its inspector on 127.0.0.1:9229; --keep leaves it
                                                   running; --extract writes its manifest, logs and disk to DIR

REF is 'fixture' (this repo's test guest), a directory with an unpacked mixtape, name[:tag]
(download.stereos.ai/mixtapes/name:tag), a full registry reference, or one with @sha256:<digest>.
The cache is mb's: $MB_CONFIG_DIR, else $XDG_CONFIG_HOME/mb, else ~/.config/mb.
A is x86_64 or aarch64 (default: the host's).`

async function main(argv: string[]): Promise<number> {
  const [first, ...tail] = argv
  // `stereos-harness --help` and `-h` mean help, not an unknown command.
  const [command, rest] = first === '--help' || first === '-h' ? ['help', tail] : [first, tail]
  const { values, positionals } = parseArgs({
    args: rest,
    allowPositionals: true,
    options: {
      mixtape: { type: 'string' },
      arch: { type: 'string', multiple: true },
      bootstrap: { type: 'string', default: 'agentd' },
      json: { type: 'boolean', default: false },
      keep: { type: 'boolean', default: false },
      force: { type: 'boolean', default: false },
      templates: { type: 'boolean', default: false },
      'unused-since': { type: 'string' },
      exec: { type: 'string' },
      extract: { type: 'string' },
      rerun: { type: 'boolean', default: false },
      'inspect-brk': { type: 'boolean', default: false },
      'inspect-port': { type: 'string' },
      checkout: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  })
  if (values.help || !command || command === 'help') {
    process.stdout.write(`${USAGE}\n`)
    return command ? 0 : 2
  }
  const arches = (values.arch ?? []).map((a) => {
    const parsed = Arch.safeParse(a)
    if (!parsed.success) throw new HarnessError('INVALID_OPTIONS', `--arch must be x86_64 or aarch64, got ${a}`)
    return parsed.data
  })
  if (arches.length > 1 && command !== 'share') throw new HarnessError('INVALID_OPTIONS', `${command} takes one --arch`)
  const arch = arches[0] === undefined ? undefined : { data: arches[0] }
  if (values.bootstrap !== 'agentd' && values.bootstrap !== 'ssh')
    throw new HarnessError('INVALID_OPTIONS', `--bootstrap must be agentd or ssh, got ${values.bootstrap}`)
  const wanted = command === 'pull' || command === 'rm' || command === 'stop' || command === 'debug' ? 1 : 0
  if (positionals.length > wanted && ['doctor', 'boot', 'pull', 'ls', 'rm', 'prune', 'share', 'kept', 'stop', 'debug'].includes(command))
    throw new HarnessError('INVALID_OPTIONS', `unexpected argument(s) for ${command}: ${positionals.slice(wanted).join(' ')}`, {
      fix: 'see stereos-harness --help',
    })
  switch (command) {
    case 'doctor':
      return doctorCommand({ json: values.json, mixtape: values.mixtape, arch: arch?.data })
    case 'boot':
      return bootCommand({ mixtape: values.mixtape ?? 'fixture', arch: arch?.data, json: values.json, keep: values.keep })
    case 'run':
      return runCommand({ mixtape: values.mixtape ?? 'fixture', arch: arch?.data, bootstrap: values.bootstrap, keep: values.keep, command: positionals })
    case 'share':
      return shareCommand({ arches: arches.length ? arches : [hostArch() ?? 'x86_64'], json: values.json })
    case 'pull':
      return pullCommand({ ref: positionals[0], arch: arch?.data, json: values.json, force: values.force })
    case 'ls':
      return values.templates ? templatesCommand({ json: values.json }) : lsCommand({ json: values.json })
    case 'rm':
      return rmCommand({ ref: positionals[0], json: values.json })
    case 'prune':
      return pruneCommand({ json: values.json, templates: pruneScope(values.templates, values['unused-since']) })
    case 'kept':
      return keptCommand({ json: values.json })
    case 'ssh':
      return sshCommand({ id: positionals[0], command: positionals.slice(1) })
    case 'debug':
      return debugCommand({
        capture: positionals[0],
        exec: values.exec,
        keep: values.keep,
        extract: values.extract,
        rerun: values.rerun,
        inspectBrk: values['inspect-brk'],
        inspectPort: values['inspect-port'] === undefined ? undefined : port(values['inspect-port']),
        checkout: values.checkout,
      })
    case 'stop':
      return stopCommand({ id: positionals[0], json: values.json })
    default:
      process.stderr.write(`Unknown command ${command}\n${USAGE}\n`)
      return 2
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code
  },
  (err: unknown) => {
    log(err instanceof Error ? err.message : String(err))
    process.exitCode = 1
  },
)

/** `prune`'s templates: stale ones, every one (--templates), or also those unused since a time. */
function pruneScope(all: boolean, unusedSince: string | undefined): TemplatePruneScope {
  if (unusedSince === undefined) return all ? 'all' : 'stale'
  if (all) throw new HarnessError('INVALID_OPTIONS', '--templates and --unused-since do not go together', { fix: 'pass one of them' })
  const ms = /^\d+$/.test(unusedSince) ? Number(unusedSince) * 1000 : Date.parse(unusedSince)
  if (!Number.isFinite(ms))
    throw new HarnessError('INVALID_OPTIONS', `--unused-since must be an ISO 8601 time or Unix seconds, got ${unusedSince}`, {
      fix: 'e.g. --unused-since 2026-11-30T06:00:00Z or --unused-since "$(date -u +%s)" taken when the job started',
    })
  return { unusedBeforeMs: ms }
}

function port(text: string): number {
  const n = Number(text)
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new HarnessError('INVALID_OPTIONS', `--inspect-port must be a TCP port (0-65535), got ${text}`)
  return n
}
