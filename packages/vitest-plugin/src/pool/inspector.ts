import { createServer, type Server, type Socket } from 'node:net'
import { HarnessError } from '@stereos/harness'
import type { PoolVm } from './vm.js'

/**
 * `vitest --inspect[-brk]`: Vitest's worker opens Node's inspector itself, inside the guest, on
 * the guest's 127.0.0.1. The pool listens on the host's 127.0.0.1 at the port the user asked for
 * (9229 by default, as with forks) and carries each debugger connection to the guest inspector
 * through the agent: a small guest process connects there and pipes its stdio to the socket.
 * Any network mode works, and nothing listens beyond the host's loopback.
 */
export interface InspectorConfig {
  enabled?: boolean
  port?: number
  host?: string
}

/** Connects to the guest inspector (retrying while the worker has not opened it yet) and pipes. */
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
    if (Date.now() > deadline) { console.error('stereos inspector relay: ' + err.message); process.exit(1) }
    setTimeout(attempt, 100)
  })
}
attempt()
`

export class InspectorForward {
  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  /** Listen on the host's 127.0.0.1:port and relay to the guest's inspector on the same port. */
  static async open(sandbox: Pick<PoolVm, 'spawn'>, nodePath: string, config: InspectorConfig): Promise<InspectorForward> {
    const port = config.port ?? 9229
    const sockets = new Set<Socket>()
    const server = createServer((socket) => {
      sockets.add(socket)
      socket.on('close', () => sockets.delete(socket))
      void relay(sandbox, nodePath, port, socket)
    })
    server.on('close', () => {
      for (const socket of sockets) socket.destroy()
    })
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) =>
        reject(
          new HarnessError(
            'HOST',
            `stereos: cannot forward the debugger port: 127.0.0.1:${port} is ${err.code === 'EADDRINUSE' ? 'in use' : `unavailable (${err.message})`}`,
            {
              fix: 'pass another port (--inspect=127.0.0.1:9230 or --inspect-brk=…) or stop what listens there',
            },
          ),
        ),
      )
      server.listen(port, '127.0.0.1', () => resolve())
    })
    return new InspectorForward(server, port)
  }

  close(): void {
    this.server.close()
  }
}

async function relay(sandbox: Pick<PoolVm, 'spawn'>, nodePath: string, port: number, socket: Socket): Promise<void> {
  try {
    const child = await sandbox.spawn(nodePath, ['-e', RELAY, String(port)], { stdin: true })
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
