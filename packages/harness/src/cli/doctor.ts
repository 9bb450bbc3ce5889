import { runDoctor } from '../doctor/doctor.js'

const MARK = { ok: 'ok  ', warn: 'warn', fail: 'FAIL' } as const

export async function doctorCommand(args: { json: boolean }): Promise<number> {
  const report = await runDoctor()
  if (args.json) {
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`)
  } else {
    for (const check of report.checks) {
      process.stdout.write(`${MARK[check.status]}  ${check.name.padEnd(20)} ${check.detail}\n`)
      if (check.fix && check.status !== 'ok') process.stdout.write(`      ${''.padEnd(20)} fix: ${check.fix}\n`)
    }
    process.stdout.write(report.canBoot ? 'This host can boot stereOS guests.\n' : 'This host cannot boot any guest: fix the FAIL lines above.\n')
  }
  return report.canBoot ? 0 : 1
}
