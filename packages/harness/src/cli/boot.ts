import { Sandbox } from '../sandbox/sandbox.js'
import type { Arch } from '../config/options.js'

export interface BootArgs {
  mixtape: string
  arch: Arch | undefined
  json: boolean
  keep: boolean
}

/** Boot, report the boot timeline and the guest's health, shut down. */
export async function bootCommand(args: BootArgs): Promise<number> {
  const started = performance.now()
  const sandbox = await Sandbox.boot({ mixtape: args.mixtape, ...(args.arch ? { arch: args.arch } : {}), keepOnFailure: args.keep })
  // Shut down whether or not the health query worked; report its error after.
  const health = await sandbox.control.health().catch((err: unknown) => (err instanceof Error ? err : new Error(String(err))))
  const report = await sandbox.shutdown()
  if (health instanceof Error) throw health
  const totalMs = Math.round(performance.now() - started)
  const { info } = sandbox
  if (args.json) {
    process.stdout.write(`${JSON.stringify({ info, health, shutdown: report, totalMs }, null, 2)}\n`)
    return 0
  }
  const out = (line: string) => process.stdout.write(`${line}\n`)
  out(
    `Booted ${info.mixtape.ref} (${info.mixtape.version ?? 'unversioned'}) for ${info.arch} under ${info.accel.toUpperCase()}${info.accelNote && info.accel === 'tcg' ? ` — ${info.accelNote}` : ''}`,
  )
  const plane =
    info.transport.kind === 'tcp'
      ? `tcp 127.0.0.1:${info.transport.port}`
      : info.transport.kind === 'unix'
        ? `unix ${info.transport.path}`
        : `vsock cid ${info.transport.cid}`
  const ssh = info.sockets.ssh ?? (info.ports.ssh === undefined ? 'none (no network)' : `127.0.0.1:${info.ports.ssh}`)
  out(`control plane: ${plane}   ssh: ${ssh}`)
  out('boot timeline:')
  for (const entry of info.timeline) out(`  ${String(entry.atMs).padStart(6)} ms  ${entry.phase}`)
  out(`guest health: state=${health.state} uptime=${health.uptime_seconds}s agents=${health.agents?.length ?? 0}`)
  out(`shutdown: ${report.stoppedBy} (QEMU exit ${report.exit.code ?? report.exit.signal})   total ${totalMs} ms`)
  return 0
}
