import { chmodSync, existsSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { isHarnessError } from '../src/errors.js'
import { parseChallenge } from '../src/mixtape/oci/auth.js'
import { findCredentials } from '../src/mixtape/oci/credentials.js'
import { pullMixtape } from '../src/mixtape/pull.js'
import { publishMixtape, startProxy, startRegistry, type Proxy, type Registry, removeTempDirs, tempDir } from './support/registry.js'

afterAll(removeTempDirs)

const FAST_RETRY = { attempts: 2, baseMs: 10, maxMs: 50 }
const temp = tempDir

/** An environment with no credentials of the developer's own: HOME and DOCKER_CONFIG point at empty dirs. */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const home = temp('sh-home-')
  return { PATH: process.env.PATH, HOME: home, DOCKER_CONFIG: join(home, '.docker'), ...extra }
}

function dockerConfig(config: unknown): Record<string, string> {
  const dir = temp('sh-docker-')
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config))
  return { DOCKER_CONFIG: dir }
}

describe('WWW-Authenticate challenges', () => {
  test('Bearer with quoted, escaped and bare parameters; Basic; garbage', () => {
    expect(parseChallenge('Bearer realm="https://auth.example/token",service="registry.example",scope="repository:mixtapes/coder:pull"')).toEqual({
      scheme: 'bearer',
      params: { realm: 'https://auth.example/token', service: 'registry.example', scope: 'repository:mixtapes/coder:pull' },
    })
    expect(parseChallenge('Bearer realm="a\\"b", error=insufficient_scope')).toEqual({
      scheme: 'bearer',
      params: { realm: 'a"b', error: 'insufficient_scope' },
    })
    expect(parseChallenge('Basic realm="Registry Realm"')).toEqual({ scheme: 'basic', params: { realm: 'Registry Realm' } })
    expect(parseChallenge(null)).toBeUndefined()
  })
})

describe('credentials: environment, then the docker config file', () => {
  test('STEREOS_REGISTRY_USERNAME/PASSWORD, for every registry or only STEREOS_REGISTRY_HOSTS', () => {
    const env = cleanEnv({ STEREOS_REGISTRY_USERNAME: 'ci', STEREOS_REGISTRY_PASSWORD: 'pw' })
    expect(findCredentials('reg.example', env)).toMatchObject({ username: 'ci', password: 'pw' })
    const scoped = { ...env, STEREOS_REGISTRY_HOSTS: 'other.example, reg.example' }
    expect(findCredentials('reg.example', scoped)).toMatchObject({ username: 'ci' })
    expect(findCredentials('third.example', scoped)).toBeUndefined()
  })

  test('docker config auths: base64 auth under a URL key, username/password, identitytoken', () => {
    const env = cleanEnv(
      dockerConfig({
        auths: {
          'https://reg.example/v1/': { auth: Buffer.from('alice:pa:ss').toString('base64') },
          'plain.example:5000': { username: 'bob', password: 'pw' },
          'oauth.example': { identitytoken: 'refresh-me' },
          'https://index.docker.io/v1/': { auth: Buffer.from('hub:tok').toString('base64') },
        },
      }),
    )
    expect(findCredentials('reg.example', env)).toMatchObject({ username: 'alice', password: 'pa:ss' })
    expect(findCredentials('plain.example:5000', env)).toMatchObject({ username: 'bob', password: 'pw' })
    expect(findCredentials('oauth.example', env)).toMatchObject({ identityToken: 'refresh-me' })
    expect(findCredentials('index.docker.io', env)).toMatchObject({ username: 'hub', password: 'tok' })
    expect(findCredentials('unknown.example', env)).toBeUndefined()
  })

  test('credHelpers and credsStore run docker-credential-<name> get', () => {
    const bin = temp('sh-bin-')
    const helper = join(bin, 'docker-credential-fake')
    writeFileSync(
      helper,
      '#!/bin/sh\nread server\ncase "$server" in\n  helped.example) echo "{\\"ServerURL\\":\\"$server\\",\\"Username\\":\\"carol\\",\\"Secret\\":\\"s3cret\\"}" ;;\n  *) echo "credentials not found in native keychain"; exit 1 ;;\nesac\n',
    )
    chmodSync(helper, 0o755)
    const env = { ...cleanEnv(dockerConfig({ credHelpers: { 'helped.example': 'fake' }, credsStore: 'fake' })), PATH: `${bin}:${process.env.PATH}` }
    expect(findCredentials('helped.example', env)).toMatchObject({ username: 'carol', password: 's3cret', source: 'docker-credential-fake' })
    expect(findCredentials('elsewhere.example', env)).toBeUndefined()
  })

  test('a docker config that is not JSON is a REGISTRY error naming the file', () => {
    const dir = temp('sh-docker-')
    writeFileSync(join(dir, 'config.json'), '{ nope')
    expect(() => findCredentials('reg.example', cleanEnv({ DOCKER_CONFIG: dir }))).toThrow(/config\.json is not valid JSON/)
  })
})

describe('the bearer token flow against a token server in front of the real registry', () => {
  let registry: Registry
  let anonymous: Proxy
  let guarded: Proxy
  beforeAll(async () => {
    registry = await startRegistry()
    await publishMixtape(registry.url, 'mixtapes/private', 'v1', { archs: ['x86_64'] })
    anonymous = await startProxy(registry.url, { auth: 'anonymous' })
    guarded = await startProxy(registry.url, { auth: { username: 'alice', password: 'secret' } })
  })
  afterAll(async () => {
    await anonymous?.stop()
    await guarded?.stop()
    await registry?.stop()
  })

  const pull = (proxy: Proxy, env: NodeJS.ProcessEnv) => {
    const base = temp('sh-mb-')
    return { base, result: pullMixtape(`${proxy.host}/mixtapes/private:v1`, { base, arch: 'x86_64', env, retry: FAST_RETRY }) }
  }

  test('anonymous: 401 challenge → token for repository:<repo>:pull → every later request carries it', async () => {
    const { result } = pull(anonymous, cleanEnv())
    await result
    expect(anonymous.tokenRequests).toHaveLength(1)
    expect(anonymous.tokenRequests[0]!.authorization).toBeUndefined()
    expect(new URLSearchParams(anonymous.tokenRequests[0]!.query).get('scope')).toBe('repository:mixtapes/private:pull')
    expect(new URLSearchParams(anonymous.tokenRequests[0]!.query).get('service')).toBe('test-registry')
    const [first, ...rest] = anonymous.requests
    expect(first!.authorization).toBeUndefined()
    expect(rest.length).toBeGreaterThan(6)
    for (const r of rest) expect(r.authorization).toMatch(/^Bearer [0-9a-f]{24}$/)
  })

  test('credentials from the environment are sent to the token server as Basic', async () => {
    const { result } = pull(guarded, cleanEnv({ STEREOS_REGISTRY_USERNAME: 'alice', STEREOS_REGISTRY_PASSWORD: 'secret' }))
    expect((await result).format).toBe('raw')
    expect(guarded.tokenRequests.at(-1)!.authorization).toBe(`Basic ${Buffer.from('alice:secret').toString('base64')}`)
  })

  test('credentials from a docker config file work the same', async () => {
    const env = cleanEnv(dockerConfig({ auths: { [guarded.host]: { auth: Buffer.from('alice:secret').toString('base64') } } }))
    expect((await pull(guarded, env).result).format).toBe('raw')
  })

  test('no credentials, or wrong ones: REGISTRY error naming the cause and the fix, no cache entry', async () => {
    const none = pull(guarded, cleanEnv())
    const err = await none.result.catch((e: unknown) => e)
    expect(isHarnessError(err, 'REGISTRY')).toBe(true)
    expect((err as Error).message).toMatch(
      /registry 127\.0\.0\.1:\d+ denied access to mixtapes\/private: its token server http:\/\/127\.0\.0\.1:\d+\/token answered 401 to an anonymous request/,
    )
    expect((err as Error).message).toMatch(/Fix: .*docker login 127\.0\.0\.1:\d+.*STEREOS_REGISTRY_USERNAME/)
    expect(existsSync(join(none.base, 'mixtapes'))).toBe(false)

    const wrong = pull(guarded, cleanEnv({ STEREOS_REGISTRY_USERNAME: 'alice', STEREOS_REGISTRY_PASSWORD: 'nope' }))
    const err2 = await wrong.result.catch((e: unknown) => e)
    expect((err2 as Error).message).toMatch(/answered 401 to the credentials from STEREOS_REGISTRY_USERNAME\/PASSWORD/)
    expect(existsSync(join(wrong.base, 'mixtapes'))).toBe(false)
  })
})
