import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { afterAll, afterEach, describe, expect, test } from 'vitest'
import { isHarnessError } from '../src/errors.js'
import { credentialScope } from '../src/mixtape/oci/credential-scope.js'
import { pullMixtape, type PullOptions } from '../src/mixtape/pull.js'
import { removeTempDirs, tempDir } from './support/registry.js'

/**
 * Issue 14 items 4 and 5: a hostile registry on 127.0.0.1 (a bare node:http server). Endless or
 * endlessly slow bodies must fail fast with bounded reads; a 401 naming a token realm on another
 * host must not receive the user's credentials.
 */

afterAll(removeTempDirs)

const FAST_RETRY = { attempts: 2, baseMs: 10, maxMs: 10 }
const USER = { STEREOS_REGISTRY_USERNAME: 'alice', STEREOS_REGISTRY_PASSWORD: 'hunter2' }

interface Hostile {
  host: string
  /** Requests seen: path and Authorization header. */
  seen: { path: string; authorization: string | undefined }[]
  /** Body bytes the server managed to hand to the socket, over all responses. */
  sent: () => number
  stop(): Promise<void>
}

const servers: Hostile[] = []
afterEach(async () => {
  for (const server of servers.splice(0)) await server.stop()
})

async function hostile(handler: (req: IncomingMessage, res: ServerResponse, h: Hostile) => void): Promise<Hostile> {
  let sent = 0
  const server = createServer((req, res) => {
    h.seen.push({ path: req.url ?? '', authorization: req.headers.authorization })
    const write = res.write.bind(res)
    res.write = ((chunk: Buffer | string, ...rest: never[]) => {
      sent += Buffer.byteLength(chunk)
      return write(chunk, ...rest)
    }) as typeof res.write
    handler(req, res, h)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const h: Hostile = {
    host: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    seen: [],
    sent: () => sent,
    stop: async () => {
      server.closeAllConnections()
      await new Promise((resolve) => server.close(resolve))
    },
  }
  servers.push(h)
  return h
}

/** Writes 64 KiB chunks as fast as the client takes them, until the client hangs up. */
function endless(res: ServerResponse, chunk = Buffer.alloc(64 * 1024, 0x61)): void {
  const pump = () => {
    while (!res.destroyed && res.write(chunk));
    if (!res.destroyed) res.once('drain', pump)
  }
  res.on('close', () => res.removeAllListeners('drain'))
  pump()
}

/** One byte every 50 ms, forever. */
function trickle(res: ServerResponse): void {
  const timer = setInterval(() => (res.destroyed ? clearInterval(timer) : res.write('{')), 50)
  res.on('close', () => clearInterval(timer))
}

async function pullError(registry: string, options: PullOptions = {}): Promise<Error> {
  const home = tempDir('sh-home-')
  const env = { PATH: process.env.PATH, HOME: home, DOCKER_CONFIG: join(home, '.docker'), ...options.env }
  const result = await pullMixtape(`${registry}/mixtapes/evil:v1`, { base: tempDir('sh-mb-'), arch: 'x86_64', retry: FAST_RETRY, ...options, env }).then(
    () => new Error('the pull succeeded'),
    (err: unknown) => err as Error,
  )
  return result
}

describe('registry bodies are bounded in size and time (#14.4)', () => {
  // Bounded memory, observed from outside: what the server could push before the client hung up
  // (the bound read plus socket buffers), instead of the client swallowing everything.
  const SENT_BOUND = 32 * 1024 * 1024

  test('an error answer with an endless body: the error names the status, the body is dropped after a few KiB', async () => {
    const server = await hostile((_req, res) => {
      res.writeHead(500, { 'content-type': 'text/plain' })
      endless(res)
    })
    const err = await pullError(server.host)
    expect(isHarnessError(err, 'REGISTRY')).toBe(true)
    expect(err.message).toMatch(/failed after 2 attempt\(s\): the registry answered 500 Internal Server Error: a{50}/)
    expect(server.seen).toHaveLength(2)
    expect(server.sent()).toBeLessThan(SENT_BOUND)
  })

  test('a manifest with an endless body fails at 4 MiB', async () => {
    const server = await hostile((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/vnd.oci.image.manifest.v1+json' })
      endless(res)
    })
    const err = await pullError(server.host)
    expect(isHarnessError(err, 'MIXTAPE_INVALID')).toBe(true)
    expect(err.message).toContain(`the manifest at http://${server.host}/v2/mixtapes/evil/manifests/v1 is larger than 4194304 bytes`)
    expect(server.sent()).toBeLessThan(SENT_BOUND)
  })

  test('a token answer with an endless body fails at 256 KiB', async () => {
    const server = await hostile((req, res, h) => {
      if (req.url?.startsWith('/token')) {
        res.writeHead(200, { 'content-type': 'application/json' })
        res.write('{"token":"')
        return endless(res)
      }
      res.writeHead(401, { 'www-authenticate': `Bearer realm="http://${h.host}/token",service="evil"` }).end()
    })
    const err = await pullError(server.host)
    expect(isHarnessError(err, 'REGISTRY')).toBe(true)
    expect(err.message).toContain(`the token answer at http://${server.host}/token is larger than 262144 bytes`)
    expect(server.sent()).toBeLessThan(SENT_BOUND)
  })

  test('a manifest that trickles without end fails at the time bound, naming it', async () => {
    const server = await hostile((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/vnd.oci.image.manifest.v1+json' })
      trickle(res)
    })
    const err = await pullError(server.host, { bodyLimits: { timeoutMs: 600 } })
    expect(isHarnessError(err, 'REGISTRY')).toBe(true)
    expect(err.message).toMatch(
      /the manifest at http:\/\/127\.0\.0\.1:\d+\/v2\/mixtapes\/evil\/manifests\/v1 did not arrive within 600 ms \(\d+ bytes came; .*without end\)/,
    )
  })

  test('a registry that accepts the connection and never answers fails at the time bound, after the retries', async () => {
    const server = await hostile(() => undefined)
    const err = await pullError(server.host, { bodyLimits: { timeoutMs: 600 } })
    expect(isHarnessError(err, 'REGISTRY')).toBe(true)
    expect(err.message).toContain(`failed after 2 attempt(s): http://${server.host} sent no answer within 600 ms`)
    expect(server.seen).toHaveLength(2)
  })

  test('an error answer that trickles without end still yields its status within the time bound', async () => {
    const server = await hostile((_req, res) => {
      res.writeHead(403, { 'content-type': 'text/plain' })
      trickle(res)
    })
    const err = await pullError(server.host, { bodyLimits: { timeoutMs: 600 } })
    expect(isHarnessError(err, 'REGISTRY')).toBe(true)
    expect(err.message).toMatch(/was answered 403 Forbidden: \{+/)
  })
})

describe('credentials go only to the registry they are for (#14.5)', () => {
  /** Registry A challenges with a realm on server B (another port); B hands out tokens and records who asked. */
  async function realmElsewhere() {
    const realm = await hostile((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"token":"anon"}')
    })
    const registry = await hostile((req, res) => {
      if (req.headers.authorization === 'Bearer anon')
        res.writeHead(404, { 'content-type': 'application/json' }).end('{"errors":[{"code":"MANIFEST_UNKNOWN"}]}')
      else res.writeHead(401, { 'www-authenticate': `Bearer realm="http://${realm.host}/token",service="evil"` }).end()
    })
    return { realm, registry }
  }

  test('a realm on another port never sees an Authorization header (the token is asked for anonymously)', async () => {
    const { realm, registry } = await realmElsewhere()
    const err = await pullError(registry.host, { env: USER })
    expect(isHarnessError(err, 'MIXTAPE_NOT_FOUND')).toBe(true)
    expect(realm.seen.length).toBeGreaterThan(0)
    for (const request of realm.seen) expect(request.authorization).toBeUndefined()
    for (const request of registry.seen) expect(request.authorization ?? 'Bearer anon').toBe('Bearer anon')
  })

  test('a realm that then refuses says why the credentials were withheld and how to allow that host', async () => {
    const realm = await hostile((_req, res) => void res.writeHead(401).end())
    const registry = await hostile((_req, res) => void res.writeHead(401, { 'www-authenticate': `Bearer realm="http://${realm.host}/token"` }).end())
    const err = await pullError(registry.host, { env: USER })
    expect(isHarnessError(err, 'REGISTRY')).toBe(true)
    expect(err.message).toContain(
      `the credentials from STEREOS_REGISTRY_USERNAME/PASSWORD were not sent to its token server http://${realm.host}: it is not registry ${registry.host}'s host`,
    )
    expect(err.message).toContain(`STEREOS_REGISTRY_AUTH_HOSTS=${realm.host}`)
    for (const request of realm.seen) expect(request.authorization).toBeUndefined()
  })

  test('the same realm, allowed in STEREOS_REGISTRY_AUTH_HOSTS, gets them (the attack above is what changed)', async () => {
    const { realm, registry } = await realmElsewhere()
    await pullError(registry.host, { env: { ...USER, STEREOS_REGISTRY_AUTH_HOSTS: realm.host } })
    expect(realm.seen.map((r) => r.authorization)).toContain(`Basic ${Buffer.from('alice:hunter2').toString('base64')}`)
  })

  test.each([
    ['https registry, realm on its host', 'reg.example', 'https://reg.example/token', {}, true],
    ['https registry with :443, realm without', 'reg.example:443', 'https://reg.example/token', {}, true],
    ['https registry, plain-http realm on its host', 'reg.example', 'http://reg.example/token', {}, false],
    ['https registry, realm on another host', 'reg.example', 'https://auth.evil.example/token', {}, false],
    ['https registry, realm on another port', 'reg.example', 'https://reg.example:8443/token', {}, false],
    ['another host the user allowed', 'reg.example', 'https://auth.reg.example/token', { STEREOS_REGISTRY_AUTH_HOSTS: 'auth.reg.example' }, true],
    ["Docker Hub's auth.docker.io", 'index.docker.io', 'https://auth.docker.io/token', {}, true],
    ['loopback registry, http realm on it', '127.0.0.1:5000', 'http://127.0.0.1:5000/token', {}, true],
    ['loopback registry, realm on another port', '127.0.0.1:5000', 'http://127.0.0.1:5001/token', {}, false],
    ['RFC 1918 registry (http by default, not explicitly)', '10.1.2.3:5000', 'http://10.1.2.3:5000/token', {}, false],
    [
      'RFC 1918 registry listed in STEREOS_REGISTRY_INSECURE',
      '10.1.2.3:5000',
      'http://10.1.2.3:5000/token',
      { STEREOS_REGISTRY_INSECURE: '10.1.2.3:5000' },
      true,
    ],
    ['a non-http scheme', 'reg.example', 'file:///etc/passwd', {}, false],
  ] as const)('credentialScope: %s', (_name, registry, realm, env, ok) => {
    expect(credentialScope(new URL(realm), registry, env).ok).toBe(ok)
  })
})
