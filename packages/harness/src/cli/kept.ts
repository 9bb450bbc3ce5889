import { spawn } from 'node:child_process'
import { HarnessError } from '../errors.js'
import { findKeptVm, listKeptVms, stopKeptVm } from '../kept-vms.js'

/** `kept`: the VMs kept running after their runner exited (Vitest pool `keepVm`). */
export function keptCommand(args: { json: boolean }): number {
  const vms = listKeptVms()
  if (args.json) {
    process.stdout.write(`${JSON.stringify(vms, null, 2)}\n`)
    return 0
  }
  if (vms.length === 0) {
    process.stdout.write('No kept VMs. stereos({ keepVm: "on-failure" }) keeps the VM of a failed test file.\n')
    return 0
  }
  for (const vm of vms) process.stdout.write(`${vm.id}  ${vm.running ? 'running' : 'stopped'}  ${vm.arch}  ${vm.mixtape}  kept ${vm.keptAt}: ${vm.reason}\n`)
  process.stdout.write('Enter one with `stereos-harness ssh <id>`; stop it with `stereos-harness stop <id>`.\n')
  return 0
}

/** A word the remote shell reads as itself: no quoting needed, so `ps` shows `ls -la` as typed. */
const PLAIN_WORD = /^[A-Za-z0-9_@%+:,./-]+$/

/**
 * CMD as one remote command line that keeps its argv. ssh(1) joins the words after the
 * destination with spaces and the guest's login shell parses the result again, so
 * `-- sh -c 'echo one two'` would reach the guest as `sh -c echo one two`. Each word is
 * single-quoted (POSIX: a `'` inside becomes `'\''`), so the guest runs exactly these argv.
 */
export function remoteCommand(argv: readonly string[]): string {
  return argv.map((word) => (PLAIN_WORD.test(word) ? word : `'${word.replaceAll("'", "'\\''")}'`)).join(' ')
}

/**
 * `ssh <id> [-- CMD...]`: a shell (or CMD, with its arguments as given: no second parse by the
 * guest's shell; `sh -c '…'` for pipes) in a kept VM, as admin (sudo works). Exits with ssh's code.
 */
export async function sshCommand(args: { id: string | undefined; command: string[] }): Promise<number> {
  if (!args.id) throw new HarnessError('INVALID_OPTIONS', 'ssh needs the id of a kept VM', { fix: 'stereos-harness kept lists them' })
  const vm = findKeptVm(args.id)
  if (!vm.running)
    throw new HarnessError('AGENT_UNREACHABLE', `kept VM ${vm.id} is not running any more (QEMU pid ${vm.pid} is gone)`, {
      fix: `read ${vm.vmDir}/serial.log, then remove it with \`stereos-harness stop ${vm.id}\``,
    })
  if (!vm.ssh)
    throw new HarnessError('AGENT_UNREACHABLE', `kept VM ${vm.id} has no SSH forward`, {
      fix: 'keep a VM booted with networking (network.mode nat, or none with vsock)',
    })
  // A terminal when there is one and no command: an interactive shell, as `ssh host` gives.
  const tty = args.command.length === 0 && process.stdin.isTTY ? ['-t'] : []
  const remote = args.command.length === 0 ? [] : [remoteCommand(args.command)]
  const child = spawn('ssh', [...tty, ...vm.ssh, ...remote], { stdio: 'inherit' })
  return await new Promise<number>((resolve, reject) => {
    child.on('error', (err) =>
      reject(new HarnessError('HOST', `cannot run ssh: ${err.message}`, { fix: 'install an OpenSSH client (apt-get install openssh-client)' })),
    )
    child.on('exit', (code, signal) => resolve(code ?? (signal ? 128 : 1)))
  })
}

/** `stop <id>`: stop a kept VM and remove its dir. */
export async function stopCommand(args: { id: string | undefined; json: boolean }): Promise<number> {
  if (!args.id) throw new HarnessError('INVALID_OPTIONS', 'stop needs the id of a kept VM', { fix: 'stereos-harness kept lists them' })
  const { wasRunning } = await stopKeptVm(args.id)
  if (args.json) process.stdout.write(`${JSON.stringify({ id: args.id, stopped: wasRunning, removed: true })}\n`)
  else process.stdout.write(`${wasRunning ? 'stopped' : 'removed (it was not running)'} ${args.id}\n`)
  return 0
}
