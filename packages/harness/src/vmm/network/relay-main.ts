/**
 * The forward relay: runs inside QEMU's private network namespace (started by the netns
 * wrapper, dies with QEMU by parent-death signal) and exposes each of QEMU's SLIRP forwards,
 * which listen on that namespace's 127.0.0.1 where no other user can reach them, as a unix
 * socket in the VM dir (dir 0700, socket 0600): only the user who booted the VM can connect.
 *
 * Self-contained (node: imports only, erasable TypeScript) so that Node runs it from dist/ or,
 * under Vitest, straight from src/.
 *
 * argv[2]: JSON array of { path, port }; argv[3]: the PID of QEMU (the wrapper shell that
 * started us and then exec'd QEMU).
 */
import { chmodSync, rmSync } from 'node:fs'
import { connect, createServer, type Server, type Socket } from 'node:net'

interface RelayForward {
  path: string
  port: number
}

function parseForwards(text: string | undefined): RelayForward[] {
  const value: unknown = JSON.parse(text ?? '[]')
  if (!Array.isArray(value)) throw new Error('expected a JSON array of { path, port }')
  return value.map((item: { path?: unknown; port?: unknown }) => {
    if (typeof item.path !== 'string' || typeof item.port !== 'number') throw new Error(`bad forward ${JSON.stringify(item)}`)
    return { path: item.path, port: item.port }
  })
}

/**
 * One unix connection ↔ one TCP connection to QEMU's forward. An end (FIN) travels through
 * pipe() after the data before it, half-closes included; an error or reset on one side destroys
 * the other (destroying on a plain close would drop data still queued for the other side).
 */
function splice(client: Socket, port: number): void {
  const upstream = connect({ host: '127.0.0.1', port, allowHalfOpen: true })
  upstream.setNoDelay(true)
  client.on('error', () => upstream.destroy())
  upstream.on('error', () => client.destroy())
  client.pipe(upstream)
  upstream.pipe(client)
}

function listen(forward: RelayForward): Promise<Server> {
  rmSync(forward.path, { force: true })
  const server = createServer({ allowHalfOpen: true }, (client) => splice(client, forward.port))
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(forward.path, () => {
      // The VM dir (0700) already keeps other users out; 0600 says so on the socket itself.
      chmodSync(forward.path, 0o600)
      resolve(server)
    })
  })
}

/**
 * setpriv arms the parent-death signal in the child, so a QEMU killed in the moment between
 * fork and that prctl leaves us running with no signal to come: then our parent is no longer
 * the PID we were given, and there is nothing to relay for.
 */
function orphaned(): boolean {
  const parent = Number(process.argv[3])
  return Number.isInteger(parent) && parent > 0 && process.ppid !== parent
}

async function main(): Promise<void> {
  if (orphaned()) process.exit(0)
  const forwards = parseForwards(process.argv[2])
  await Promise.all(forwards.map(listen))
}

main().catch((err: unknown) => {
  process.stderr.write(`stereos-harness relay: ${(err as Error).message}\n`)
  process.exit(1)
})
