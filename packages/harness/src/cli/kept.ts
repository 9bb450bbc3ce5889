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

/** `ssh <id> [-- CMD...]`: a shell (or CMD) in a kept VM, as admin (sudo works). Exits with ssh's code. */
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
  const child = spawn('ssh', [...tty, ...vm.ssh, ...args.command], { stdio: 'inherit' })
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
