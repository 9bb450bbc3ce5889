/**
 * One guest connection to a declared host port (network.hostPorts): QEMU's SLIRP spawns this
 * per connection with the connection as stdin/stdout (and stderr), and it splices that into the
 * harness's unix socket (host-ports.ts), which reaches 127.0.0.1:<port> from the host's network
 * namespace. Silent: whatever it printed would go to the guest. Self-contained (node: imports
 * only, erasable TypeScript) so that Node runs it from dist/ or src/.
 */
import { connect } from 'node:net'

const path = process.argv[2]
if (!path) process.exit(2)
const socket = connect({ path, allowHalfOpen: true })
socket.on('error', () => process.exit(1))
process.stdin.on('error', () => process.exit(1))
process.stdout.on('error', () => process.exit(1))
process.stdin.pipe(socket)
socket.pipe(process.stdout)
// stdout to a socket is asynchronous: exit once what the host sent has been written.
socket.on('close', () => process.stdout.write('', () => process.exit(0)))
