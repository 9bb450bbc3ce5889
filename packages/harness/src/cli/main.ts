#!/usr/bin/env node
import { parseArgs } from 'node:util'
import { Arch } from '../config/options.js'
import { HarnessError } from '../errors.js'
import { bootCommand } from './boot.js'
import { doctorCommand } from './doctor.js'

const USAGE = `Usage: stereos-harness <command> [options]

Commands:
  doctor [--json]                                  check what this host can boot, with fixes
  boot --mixtape REF [--arch A] [--json] [--keep]  boot a sandbox, print its boot timeline and health, shut down

REF is 'fixture' (this repo's test guest), a directory with an unpacked mixtape, or name[:tag] in mb's cache.
A is x86_64 or aarch64 (default: the host's).`

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv
  const { values } = parseArgs({
    args: rest,
    options: {
      mixtape: { type: 'string', default: 'fixture' },
      arch: { type: 'string' },
      json: { type: 'boolean', default: false },
      keep: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  })
  if (values.help || !command || command === 'help') {
    process.stdout.write(`${USAGE}\n`)
    return command ? 0 : 2
  }
  switch (command) {
    case 'doctor':
      return doctorCommand({ json: values.json })
    case 'boot': {
      const arch = values.arch === undefined ? undefined : Arch.safeParse(values.arch)
      if (arch && !arch.success) throw new HarnessError('INVALID_OPTIONS', `--arch must be x86_64 or aarch64, got ${values.arch}`)
      return bootCommand({ mixtape: values.mixtape, arch: arch?.data, json: values.json, keep: values.keep })
    }
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
    process.stderr.write(`stereos-harness: ${err instanceof Error ? err.message : String(err)}\n`)
    process.exitCode = 1
  },
)
