/**
 * stdin/stdout ↔ a unix socket: ssh's ProxyCommand for a VM whose sshd is reached through the
 * relay's ssh.sock (`ssh -o ProxyCommand="node unix-stdio.js <socket>"`). Self-contained, like
 * relay-main.ts, so Node runs it from dist/ or src/.
 */
import { connect } from 'node:net'

const path = process.argv[2]
if (!path) {
  process.stderr.write('usage: unix-stdio <socket>\n')
  process.exit(2)
}
const socket = connect({ path })
socket.on('error', (err) => {
  process.stderr.write(`unix-stdio: ${path}: ${err.message}\n`)
  process.exit(1)
})
process.stdin.pipe(socket)
socket.pipe(process.stdout)
// stdout to a pipe is asynchronous: exit once what the socket sent has been written.
socket.on('close', () => process.stdout.write('', () => process.exit(0)))
