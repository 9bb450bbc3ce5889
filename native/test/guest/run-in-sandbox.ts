import { chmodSync, cpSync, mkdirSync, mkdtempSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Sandbox, type Arch } from '@stereos/harness'

const nativeDir = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
const NODE_ARCH: Record<Arch, string> = { x86_64: 'x64', aarch64: 'arm64' }

export interface GuestRun {
  exitCode: number
  output: string
}

/**
 * Run one of this package's scripts inside a fixture guest through the harness: stage the
 * package (dist/, the guest arch's prebuild, the script) in a 9p share, boot, have agentd start
 * `node <script>` as the agent user, and collect its output and exit code from the share.
 * Used by the e2e in-guest suite and by `npm run bench -- vsock`.
 */
export async function runInSandbox(arch: Arch, script: string, options: { runtimeDir?: string; timeoutMs?: number } = {}): Promise<GuestRun> {
  const share = join(mkdtempSync(join(tmpdir(), `sh-vsock-${arch}-`)), 'share')
  mkdirSync(share)
  cpSync(join(nativeDir, 'package.json'), join(share, 'package.json'))
  cpSync(join(nativeDir, 'dist'), join(share, 'dist'), { recursive: true })
  cpSync(join(nativeDir, 'prebuilds', `linux-${NODE_ARCH[arch]}`), join(share, 'prebuilds', `linux-${NODE_ARCH[arch]}`), { recursive: true })
  cpSync(join(nativeDir, script), join(share, script))
  chmodSync(share, 0o777) // the agent user writes its results here
  const cmd = `node --expose-gc /mnt/s/${script} > /mnt/s/result.txt 2>&1; echo $? > /mnt/s/exit-code`
  const jcard = `[[agents]]\nname = "vsock"\nharness = "custom"\ntype = "native"\nprompt = ${JSON.stringify(cmd)}\n`
  await using sandbox = await Sandbox.boot({
    arch,
    ...(options.runtimeDir ? { runtimeDir: options.runtimeDir } : {}),
    resources: { memory: '1GiB' },
    shared: [{ host: share, guest: '/mnt/s' }],
    jcard,
    bootTimeoutMs: 240_000,
  })
  const exitFile = join(share, 'exit-code')
  const deadline = Date.now() + (options.timeoutMs ?? 600_000)
  for (;;) {
    try {
      const exitCode = Number(readFileSync(exitFile, 'utf8').trim())
      return { exitCode, output: readFileSync(join(share, 'result.txt'), 'utf8') }
    } catch {
      if (Date.now() > deadline) throw new Error(`${script} gave no exit code within ${options.timeoutMs ?? 600_000} ms; guest console: ${sandbox.logs.serial}`)
      if (await Promise.race([sandbox.exited.then(() => true), new Promise<false>((resolve) => setTimeout(() => resolve(false), 250))])) {
        throw new Error(`the guest stopped before ${script} finished; see ${sandbox.logs.serial}`)
      }
    }
  }
}
