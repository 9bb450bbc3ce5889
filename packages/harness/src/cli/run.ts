import { constants } from 'node:os'
import { Sandbox } from '../sandbox/sandbox.js'
import type { Arch } from '../config/options.js'
import { HarnessError } from '../errors.js'
import { log } from '../log.js'

export interface RunArgs {
  mixtape: string
  arch: Arch | undefined
  bootstrap: 'agentd' | 'ssh'
  keep: boolean
  command: string[]
}

/** Boot, run one command in the guest with its output streamed here, shut down, exit with its code. */
export async function runCommand(args: RunArgs): Promise<number> {
  const [cmd, ...rest] = args.command
  if (!cmd) throw new HarnessError('INVALID_OPTIONS', 'run needs a command: stereos-harness run [options] -- CMD [ARGS...]')
  const sandbox = await Sandbox.boot({ mixtape: args.mixtape, ...(args.arch ? { arch: args.arch } : {}), bootstrap: args.bootstrap, keepOnFailure: args.keep })
  // Ctrl-C stops the guest command first; the VM still shuts down cleanly below.
  let interrupted: NodeJS.Signals | undefined
  const child = await sandbox.spawn(cmd, rest, { stdin: !process.stdin.isTTY }).catch(async (err: unknown) => {
    await sandbox.shutdown()
    throw err
  })
  const onSignal = (signal: NodeJS.Signals) => {
    interrupted = signal
    void child.kill(signal).catch(() => undefined)
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  try {
    if (child.stdin) process.stdin.pipe(child.stdin)
    child.stdout.pipe(process.stdout, { end: false })
    child.stderr.pipe(process.stderr, { end: false })
    const done = (s: NodeJS.ReadableStream) => new Promise<void>((resolve) => s.once('end', resolve).once('close', resolve))
    const [exit] = await Promise.all([child.exited, done(child.stdout), done(child.stderr)])
    process.stdin.unpipe()
    if (exit.signal) {
      const n = constants.signals[exit.signal as NodeJS.Signals] ?? 0
      if (!interrupted) log(`${cmd} was killed by ${exit.signal}`)
      return 128 + n
    }
    return exit.exitCode ?? 1
  } finally {
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
    process.stdin.destroy()
    await sandbox.shutdown()
  }
}
