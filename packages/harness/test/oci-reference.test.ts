import { describe, expect, test } from 'vitest'
import { isHarnessError } from '../src/errors.js'
import { layerOutput, MEDIA, type Descriptor } from '../src/mixtape/oci/media-types.js'
import { parseReference, registryScheme } from '../src/mixtape/oci/reference.js'

const DIGEST = `sha256:${'ab'.repeat(32)}`

describe("mixtape references, parsed as mb's ParseReference + local name/tag rules", () => {
  test.each([
    // raw, registry, repository, tag, digest, local name, local tag
    ['coder', 'download.stereos.ai', 'mixtapes/coder', 'latest', undefined, 'coder', 'latest'],
    ['coder:2026.03.01.0', 'download.stereos.ai', 'mixtapes/coder', '2026.03.01.0', undefined, 'coder', '2026.03.01.0'],
    ['opencode-mixtape:dev-0f0941e', 'download.stereos.ai', 'mixtapes/opencode-mixtape', 'dev-0f0941e', undefined, 'opencode-mixtape', 'dev-0f0941e'],
    [`coder@${DIGEST}`, 'download.stereos.ai', 'mixtapes/coder', undefined, DIGEST, 'coder', 'latest'],
    ['download.stereos.ai/mixtapes/coder:nightly', 'download.stereos.ai', 'mixtapes/coder', 'nightly', undefined, 'coder', 'nightly'],
    ['myregistry.io/my/repo:v1', 'myregistry.io', 'my/repo', 'v1', undefined, 'repo', 'v1'],
    ['127.0.0.1:5000/mixtapes/coder', '127.0.0.1:5000', 'mixtapes/coder', 'latest', undefined, 'coder', 'latest'],
    [`localhost:5000/a/b/coder:t@${DIGEST}`, 'localhost:5000', 'a/b/coder', 't', DIGEST, 'coder', 'latest'],
    ['localhost/mixtapes/coder', 'localhost', 'mixtapes/coder', 'latest', undefined, 'coder', 'latest'],
    ['papercomputeco/coder:1', 'index.docker.io', 'papercomputeco/coder', '1', undefined, 'coder', '1'],
    ['docker.io/library/coder', 'index.docker.io', 'library/coder', 'latest', undefined, 'coder', 'latest'],
  ] as const)('%s', (raw, registry, repository, tag, digest, name, localTag) => {
    expect(parseReference(raw)).toMatchObject({ registry, repository, tag, digest, name, localTag })
  })

  test('the canonical form names registry, repository, tag and digest', () => {
    expect(parseReference('coder').canonical).toBe('download.stereos.ai/mixtapes/coder:latest')
    expect(parseReference(`coder@${DIGEST}`).canonical).toBe(`download.stereos.ai/mixtapes/coder@${DIGEST}`)
  })

  test.each([
    ['Coder', /repository component "Coder" must be lowercase/],
    ['coder:', /the tag "" is not a valid tag/],
    ['coder:-x', /the tag "-x" is not a valid tag/],
    ['coder@sha256:1234', /not sha256:<64 lowercase hex digits>/],
    [`coder@sha512:${'a'.repeat(128)}`, /not sha256:/],
    ['reg.io/../etc:x', /repository component "\.\." must be/],
    ['reg.io//x', /repository component ""/],
  ])('%s is refused with the reason', (raw, reason) => {
    let err: unknown
    try {
      parseReference(raw)
    } catch (e) {
      err = e
    }
    expect(isHarnessError(err, 'INVALID_OPTIONS')).toBe(true)
    expect((err as Error).message).toMatch(reason)
  })

  test('http for loopback, localhost, .local and RFC 1918 hosts and $STEREOS_REGISTRY_INSECURE; https otherwise', () => {
    const env = { STEREOS_REGISTRY_INSECURE: 'reg.lan:5000' }
    for (const host of [
      '127.0.0.1:5000',
      'localhost',
      'localhost:5000',
      'box.local',
      '10.1.2.3',
      '172.20.0.1:5000',
      '192.168.1.9',
      '[::1]:5000',
      'reg.lan:5000',
    ]) {
      expect(registryScheme(host, env), host).toBe('http')
    }
    for (const host of ['download.stereos.ai', '172.32.0.1', '8.8.8.8:5000', 'reg.lan']) expect(registryScheme(host, env), host).toBe('https')
  })
})

describe('layer → file, by media type and title (mb resolveLayerOutput)', () => {
  const layer = (mediaType: string, title?: string): Descriptor => ({
    mediaType,
    digest: DIGEST,
    size: 1,
    ...(title ? { annotations: { 'org.opencontainers.image.title': title } } : {}),
  })
  const none = new Set<string>()

  test.each([
    [MEDIA.diskRawZstd, undefined, 'stereos.img', true],
    [MEDIA.diskQcow2Zstd, undefined, 'stereos.qcow2', true],
    [MEDIA.diskRaw, undefined, 'stereos.img', false],
    [MEDIA.diskQcow2, undefined, 'stereos.qcow2', false],
    [MEDIA.kernel, undefined, 'bzImage', false],
    [MEDIA.initrd, undefined, 'initrd', false],
    [MEDIA.cmdline, undefined, 'cmdline', false],
    [MEDIA.init, undefined, 'init', false],
    [MEDIA.mixtapeToml, undefined, 'mixtape.toml', false],
    ['application/octet-stream', undefined, 'ab'.repeat(32), false],
    [MEDIA.diskRawZstd, 'nixos.img.zst', 'nixos.img', true],
    [MEDIA.diskRawZstd, 'disk.img', 'disk.img', true],
    [MEDIA.kernel, 'some/dir/Image', 'Image', false],
  ] as const)('%s titled %s → %s', (mediaType, title, file, zstd) => {
    expect(layerOutput(layer(mediaType, title), none)).toMatchObject({ file, zstd })
  })

  test('names that escape, hide or collide are MIXTAPE_INVALID', () => {
    for (const [title, reserved] of [
      ['..', none],
      ['.hidden', none],
      ['a/', none],
      ['bzImage', new Set(['bzImage'])],
    ] as const) {
      expect(() => layerOutput(layer(MEDIA.kernel, title), reserved), title).toThrow(/not a plain file name or is already taken/)
    }
  })
})
