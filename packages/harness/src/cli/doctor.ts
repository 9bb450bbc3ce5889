import type { Arch } from '../config/options.js'
import { runDoctor, type Check } from '../doctor/doctor.js'
import { runMixtapeDoctor } from '../doctor/mixtape.js'

const MARK = { ok: 'ok  ', warn: 'warn', fail: 'FAIL' } as const

export interface DoctorArgs {
  json: boolean
  /** Also boot this mixtape once and check what the harness needs in it. */
  mixtape: string | undefined
  arch: Arch | undefined
}

export async function doctorCommand(args: DoctorArgs): Promise<number> {
  const report = await runDoctor()
  // The host checks say whether any guest can boot; only then is the mixtape booted.
  const mixtape = args.mixtape !== undefined && report.canBoot ? await runMixtapeDoctor(args.mixtape, args.arch ? { arch: args.arch } : {}) : undefined
  const ok = report.canBoot && (mixtape?.ok ?? true)
  if (args.json) {
    process.stdout.write(`${JSON.stringify(mixtape ? { ...report, mixtape } : report, null, 2)}\n`)
    return ok ? 0 : 1
  }
  printChecks(report.checks)
  process.stdout.write(report.canBoot ? 'This host can boot stereOS guests.\n' : 'This host cannot boot any guest: fix the FAIL lines above.\n')
  if (mixtape) {
    process.stdout.write(`\nMixtape ${mixtape.ref}:\n`)
    printChecks(mixtape.checks)
    process.stdout.write(
      mixtape.ok
        ? `${mixtape.ref} is harness-ready (warn lines: paths the harness can do without).\n`
        : `${mixtape.ref}: a boot path cannot work: fix the FAIL lines above.\n`,
    )
  }
  return ok ? 0 : 1
}

function printChecks(checks: Check[]): void {
  for (const check of checks) {
    process.stdout.write(`${MARK[check.status]}  ${check.name.padEnd(20)} ${check.detail}\n`)
    if (check.fix && check.status !== 'ok') process.stdout.write(`      ${''.padEnd(20)} fix: ${check.fix}\n`)
  }
}
