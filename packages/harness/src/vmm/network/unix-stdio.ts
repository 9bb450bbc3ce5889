/**
 * stdin/stdout ↔ a unix socket. Two users:
 * - ssh's ProxyCommand for a VM whose sshd is reached through the relay's ssh.sock
 *   (`ssh -o ProxyCommand="node unix-stdio.js <socket>"`): errors are said on stderr;
 * - `--guest`: QEMU's SLIRP guestfwd command for one guest connection to a declared host port
 *   (network.hostPorts, host-ports.ts), with the connection as stdin/stdout/stderr: silent
 *   (whatever it printed would go to the guest), and half-closes pass through.
 * Self-contained (node: imports only, erasable TypeScript), so Node runs it from dist/ or src/.
 */
import { connect } from 'node:net'

const guest = process.argv[2] === '--guest'
const path = process.argv[guest ? 3 : 2]
const fail = (message: string, code: number): never => {
  if (!guest) process.stderr.write(message)
  process.exit(code)
}
if (!path) fail('usage: unix-stdio [--guest] <socket>\n', 2)
const socket = connect({ path: path as string, allowHalfOpen: guest })
socket.on('error', (err) => fail(`unix-stdio: ${path}: ${err.message}\n`, 1))
if (guest) {
  process.stdin.on('error', () => process.exit(1))
  process.stdout.on('error', () => process.exit(1))
}
process.stdin.pipe(socket)
socket.pipe(process.stdout)
// stdout is asynchronous: exit once what the socket sent has been written.
socket.on('close', () => process.stdout.write('', () => process.exit(0)))
