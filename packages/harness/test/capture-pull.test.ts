import { describe, expect, test } from 'vitest'
import { findMixtapeByDigest } from '../src/capture/mixtape-digest.js'
import { isHarnessError } from '../src/errors.js'
import { publishMixtape, type Proxy as RegistryProxy, type Registry, registryWithProxy, sha256, tempDir } from './support/registry.js'

let registry: Registry
let proxy: RegistryProxy
registryWithProxy((r, p) => {
  registry = r
  proxy = p
})

/**
 * `debug` on a machine without the capture's mixtape: the capture names where it was pulled
 * from by digest, and the disk's sha256 decides (a real registry on 127.0.0.1).
 */
describe("a capture's mixtape missing here is pulled by digest", () => {
  test('pulled into an empty store and matched by its disk; a registry that serves another disk is refused', async () => {
    const published = await publishMixtape(registry.url, 'mixtapes/coder', 'latest', { archs: ['x86_64'] })
    const disk = published.mixtapes.x86_64.files['stereos.img']
    const pull = `${proxy.host}/mixtapes/coder@${published.index}`
    const before = process.env.MB_CONFIG_DIR
    process.env.MB_CONFIG_DIR = tempDir('sh-mb-capture-')
    try {
      const lines: string[] = []
      const wanted = {
        ref: 'coder:latest',
        disk: { file: 'stereos.img', format: 'raw' as const, sha256: sha256(disk).slice('sha256:'.length), bytes: disk.length },
        pull,
      }
      const mixtape = await findMixtapeByDigest(wanted, 'x86_64', (line) => lines.push(line))
      expect(mixtape.dir.startsWith(process.env.MB_CONFIG_DIR)).toBe(true)
      expect(lines[0]).toBe(`the capture's mixtape coder:latest is not here: pulling ${pull}`)
      // Now it is here: found without a pull.
      proxy.reset()
      await findMixtapeByDigest(wanted, 'x86_64', () => undefined)
      expect(proxy.requests).toEqual([])
      const other = { ...wanted, disk: { ...wanted.disk, sha256: '0'.repeat(64) } }
      const err = await findMixtapeByDigest(other, 'x86_64', () => undefined).catch((e: unknown) => e)
      expect(isHarnessError(err, 'MIXTAPE_NOT_FOUND')).toBe(true)
      expect((err as Error).message).toContain(`${pull} has no disk stereos.img with sha256:000000000000`)
    } finally {
      if (before === undefined) delete process.env.MB_CONFIG_DIR
      else process.env.MB_CONFIG_DIR = before
    }
  })
})
