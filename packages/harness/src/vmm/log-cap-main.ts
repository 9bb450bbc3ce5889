/**
 * `node log-cap-main.js <qemu-pid> <vm-dir> <log>...`: keeps capping a kept VM's logs (log-cap.ts)
 * after the process that booted it has gone. Started detached by `Sandbox.detach`, since in-process
 * caps end with their process while a kept QEMU (keepVm) and its guest go on writing. Exits when
 * that QEMU is gone: its pid dead, or reused by a process whose argv does not name the VM dir.
 */
import { isAlive, processArgv } from '../host/process.js'
import { capLog, LOG_CAP_INTERVAL_MS } from './log-cap.js'

const [pidArg, vmDir, ...logs] = process.argv.slice(2)
const pid = Number(pidArg)
if (!Number.isInteger(pid) || pid <= 0 || !vmDir || logs.length === 0) {
  process.stderr.write('usage: log-cap-main <qemu-pid> <vm-dir> <log>...\n')
  process.exit(2)
}

const qemuLives = () => isAlive(pid) && (processArgv(pid)?.some((arg) => arg.includes(vmDir)) ?? false)

const timer = setInterval(() => {
  for (const log of logs) capLog(log)
  if (!qemuLives()) clearInterval(timer)
}, LOG_CAP_INTERVAL_MS)
