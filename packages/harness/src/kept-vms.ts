import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { z } from 'zod'
import { HarnessError } from './errors.js'
import { isAlive, processArgv } from './host/process.js'
import type { Sandbox } from './sandbox/sandbox.js'
import { defaultRuntimeDir, removeVmDir } from './vmm/vm-dir.js'

/**
 * VMs kept running after their runner exited (the Vitest pool's `keepVm`), so a user can enter
 * one and look around. The record lives in the VM dir itself (`kept.json`, beside the `kept`
 * marker that orphan sweeps respect), so stopping a VM removes its record with it.
 */
export const KeptVm = z.object({
  id: z.string(),
  pid: z.int().positive(),
  vmDir: z.string(),
  arch: z.string(),
  mixtape: z.string(),
  /** ssh(1) arguments that reach the guest, destination included (Sandbox.ssh.args). */
  ssh: z.array(z.string()).optional(),
  /** Why it was kept (e.g. the failed test file). */
  reason: z.string(),
  keptAt: z.string(),
})
export type KeptVm = z.infer<typeof KeptVm>

const RECORD = 'kept.json'

/** Detach a running sandbox (booted `detachable: true`) and record it; returns its record. */
export function keepVm(sandbox: Sandbox, reason: string): KeptVm {
  const record: KeptVm = {
    id: sandbox.info.id,
    pid: sandbox.info.pid,
    vmDir: sandbox.info.vmDir,
    arch: sandbox.info.arch,
    mixtape: sandbox.info.mixtape.ref,
    ...(sandbox.ssh ? { ssh: sandbox.ssh.args } : {}),
    reason,
    keptAt: new Date().toISOString(),
  }
  sandbox.detach(reason)
  writeFileSync(join(record.vmDir, RECORD), `${JSON.stringify(record, null, 2)}\n`, { mode: 0o600 })
  return record
}

/** A kept VM and whether its QEMU still runs (a pid whose argv names its VM dir, so a reused pid is not taken for it). */
export interface KeptVmState extends KeptVm {
  running: boolean
}

function running(record: KeptVm): boolean {
  return isAlive(record.pid) && (processArgv(record.pid)?.some((arg) => arg.includes(record.vmDir)) ?? false)
}

/** Every kept VM under the runtime dir, oldest first. */
export function listKeptVms(runtimeDir = defaultRuntimeDir()): KeptVmState[] {
  const vms = join(runtimeDir, 'vms')
  if (!existsSync(vms)) return []
  const out: KeptVmState[] = []
  for (const name of readdirSync(vms)) {
    const file = join(vms, name, RECORD)
    if (!existsSync(file)) continue
    const parsed = KeptVm.safeParse(JSON.parse(readFileSync(file, 'utf8')))
    // Only a record that describes the dir it is in counts: a copied or edited one names another dir.
    if (!parsed.success || dirname(file) !== parsed.data.vmDir) continue
    out.push({ ...parsed.data, running: running(parsed.data) })
  }
  return out.sort((a, b) => a.keptAt.localeCompare(b.keptAt))
}

/** The kept VM `id`, or an error that lists the ones there are. */
export function findKeptVm(id: string, runtimeDir = defaultRuntimeDir()): KeptVmState {
  const all = listKeptVms(runtimeDir)
  const found = all.find((vm) => vm.id === id)
  if (found) return found
  throw new HarnessError('INVALID_OPTIONS', `no kept VM ${id} in ${join(runtimeDir, 'vms')}`, {
    fix: all.length
      ? `kept VMs: ${all.map((vm) => vm.id).join(', ')} (\`stereos-harness kept\` lists them)`
      : 'no VM is kept; run vitest with stereos({ keepVm: "on-failure" }) to keep the VM of a failed file (and the same STEREOS_RUNTIME_DIR)',
  })
}

/** Stop a kept VM (SIGTERM, then SIGKILL after `graceMs`) and remove its dir and record. */
export async function stopKeptVm(id: string, runtimeDir = defaultRuntimeDir(), graceMs = 5_000): Promise<{ wasRunning: boolean }> {
  const vm = findKeptVm(id, runtimeDir)
  const wasRunning = vm.running
  if (wasRunning) {
    process.kill(vm.pid, 'SIGTERM')
    const deadline = Date.now() + graceMs
    while (running(vm) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100))
    if (running(vm)) process.kill(vm.pid, 'SIGKILL')
    while (running(vm)) await new Promise((r) => setTimeout(r, 50))
  }
  removeVmDir(vm.vmDir)
  return { wasRunning }
}
