import { mkdirSync, mkdtempSync, realpathSync, rmSync, symlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, test } from 'vitest'
import { viewRoots } from '../src/pool/view.js'

const base = realpathSync(mkdtempSync(join(tmpdir(), 'view-roots-')))
afterAll(() => rmSync(base, { recursive: true, force: true }))

/** A home at `real`, reached as `link` (as /home/u -> /data/u), with a project and a global Vitest in it. */
function linkedHome(name: string): { link: string; real: string; project: string; dist: string; plugin: string } {
  const real = join(base, name, 'data', 'u')
  const link = join(base, name, 'home-u')
  const modules = join(real, '.nvm', 'versions', 'node', 'v24', 'lib', 'node_modules')
  const project = join(real, 'app')
  const dist = join(modules, 'vitest', 'dist')
  const plugin = join(modules, '@stereos', 'vitest-plugin')
  for (const dir of [project, dist, plugin]) mkdirSync(dir, { recursive: true })
  symlinkSync(real, link)
  return { link, real, project, dist, plugin }
}

describe('a home directory reached through a link is never shared whole (#19 bounds)', () => {
  test('with Vitest installed globally under it, the project and node_modules are shared, not the home', () => {
    const h = linkedHome('global')
    const modules = join(h.real, '.nvm', 'versions', 'node', 'v24', 'lib', 'node_modules')
    // The paths as the user names them, through the link; home as $HOME names it.
    const at = (p: string) => p.replace(h.real, h.link)
    const roots = viewRoots(at(h.project), at(h.dist), at(h.plugin), h.link)
    expect(roots).toEqual([modules, h.project].sort())
    expect(roots).not.toContain(h.real)
  })

  test('a project that is the home directory, named through the link, is refused', () => {
    const h = linkedHome('is-home')
    expect(() => viewRoots(h.link, h.dist, h.plugin, h.link)).toThrow(/would have to share/)
  })

  test('a home that is named by its real path works as before', () => {
    const h = linkedHome('real')
    expect(viewRoots(h.project, h.dist, h.plugin, h.real)).not.toContain(h.real)
  })
})
