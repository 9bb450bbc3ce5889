import { createServer, type Server, type Socket } from 'node:net'
import type { GuestProcess, SpawnOptions } from '../agent-client/process.js'
import { HarnessError } from '../errors.js'

/** What a forward needs of a VM: a guest process with stdio (a Sandbox, or the pool's VM). */
export interface GuestSpawner {
  spawn(cmd: string, args: string[], options: SpawnOptions): Promise<Pick<GuestProcess, 'stdin' | 'stdout' | 'exited' | 'kill'>>
}

/** Connects to the guest's 127.0.0.1:port (retrying while nothing listens yet, 30 s) and pipes it to stdio. */
const RELAY = `
const net = require('node:net')
const port = Number(process.argv[1])
const deadline = Date.now() + 30000
function attempt() {
  const socket = net.connect(port, '127.0.0.1')
  socket.once('connect', () => {
    process.stdin.pipe(socket)
    socket.pipe(process.stdout)
    socket.on('close', () => process.exit(0))
    process.stdin.on('end', () => socket.end())
  })
  socket.once('error', (err) => {
    if (Date.now() > deadline) { console.error('stereos port relay: ' + err.message); process.exit(1) }
    setTimeout(attempt, 100)
  })
}
attempt()
`

/**
 * A port of the guest's loopback, reachable on the host's 127.0.0.1 (a debugger's inspector): each
 * host connection is carried by a small guest process the agent starts, which connects to the
 * guest port and pipes its stdio. Works in every network mode, and nothing listens beyond the
 * host's loopback.
 */
export class GuestPortForward {
  private constructor(
    private readonly server: Server,
    /** The host port (the one asked for, or the one the system gave for 0). */
    readonly port: number,
  ) {}

  /** Listen on the host's 127.0.0.1:hostPort (0: any) and relay to the guest's 127.0.0.1:guestPort with the guest's `node`. */
  static async open(vm: GuestSpawner, node: string, guestPort: number, hostPort: number, fix: string): Promise<GuestPortForward> {
    const sockets = new Set<Socket>()
    const server = createServer((socket) => {
      sockets.add(socket)
      socket.on('close', () => sockets.delete(socket))
      void relay(vm, node, guestPort, socket)
    })
    server.on('close', () => {
      for (const socket of sockets) socket.destroy()
    })
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) =>
        reject(
          new HarnessError(
            'HOST',
            `cannot forward guest port ${guestPort}: the host's 127.0.0.1:${hostPort} is ${err.code === 'EADDRINUSE' ? 'in use' : `unavailable (${err.message})`}`,
            { fix },
          ),
        ),
      )
      server.listen(hostPort, '127.0.0.1', () => resolve())
    })
    const address = server.address()
    return new GuestPortForward(server, typeof address === 'object' && address ? address.port : hostPort)
  }

  close(): void {
    this.server.close()
  }
}

async function relay(vm: GuestSpawner, node: string, port: number, socket: Socket): Promise<void> {
  try {
    const child = await vm.spawn(node, ['-e', RELAY, String(port)], { stdin: true })
    if (!child.stdin) throw new Error('no stdin channel')
    socket.pipe(child.stdin)
    child.stdout.pipe(socket)
    socket.on('close', () => void child.kill('SIGKILL').catch(() => undefined))
    socket.on('error', () => undefined)
    void child.exited.then(() => socket.end())
  } catch {
    socket.destroy()
  }
}
