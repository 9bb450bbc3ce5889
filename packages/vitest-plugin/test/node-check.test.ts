import { execFileSync, spawnSync } from 'node:child_process'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, test } from 'vitest'
import { nodeTooOld as cliNodeTooOld } from '../../harness/src/cli/node-check.js'
import { nodeTooOld } from '../src/node-check.js'

const repo = join(fileURLToPath(new URL('.', import.meta.url)), '..', '..', '..')

/** A Node older than 22 on this machine (Debian's /usr/bin/node is 20 here), if any. */
function oldNode(): string | undefined {
  for (const bin of ['/usr/bin/node', '/usr/local/bin/node']) {
    try {
      const v = execFileSync(bin, ['--version'], { encoding: 'utf8' }).trim()
      if (Number(v.slice(1).split('.')[0]) < 22) return bin
    } catch {
      // not there
    }
  }
  return undefined
}

describe('Node version check (#13.10)', () => {
  test('versions below 22.15 are refused with the needed version and a fix; 22.15 and later pass', () => {
    for (const check of [nodeTooOld, cliNodeTooOld]) {
      expect(check('v20.20.2')).toMatch(/needs Node 22\.15\.0 or newer; this is Node 20\.20\.2\nFix: /)
      expect(check('22.14.9')).toMatch(/this is Node 22\.14\.9/)
      expect(check('22.15.0')).toBeUndefined()
      expect(check('v24.1.0')).toBeUndefined()
      expect(check('23.0.0')).toBeUndefined()
    }
  })

  const old = oldNode()
  test.skipIf(!old)("on a real Node < 22, importing the plugin and running the CLI say which Node is needed (not execa's TEXT_ENCODINGS error)", () => {
    const plugin = spawnSync(old as string, ['-e', "import('@stereos/vitest-plugin').catch((e) => { console.error(e.message); process.exit(3) })"], {
      cwd: join(repo, 'fixtures', 'projects', 'basic'),
      encoding: 'utf8',
    })
    expect(plugin.status).toBe(3)
    expect(plugin.stderr).toMatch(/@stereos\/vitest-plugin needs Node 22\.15\.0 or newer/)
    expect(plugin.stderr).not.toMatch(/TEXT_ENCODINGS/)
    const cli = spawnSync(old as string, [join(repo, 'packages', 'harness', 'dist', 'cli', 'main.js'), 'ls'], { encoding: 'utf8' })
    expect(cli.status).toBe(1)
    expect(cli.stderr).toMatch(/^stereos-harness needs Node 22\.15\.0 or newer; this is Node 20\.\d+\.\d+\nFix: /)
  })
})
