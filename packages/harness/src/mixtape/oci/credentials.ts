import { execFileSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { homedir } from 'node:os'
import { join } from 'node:path'
import { HarnessError } from '../../errors.js'

/** What a registry may be sent: a user and password, or an OAuth2 refresh (identity) token. */
export interface Credentials {
  username: string
  password: string
  /** docker's `identitytoken`: exchanged for an access token at the token realm. */
  identityToken?: string | undefined
  /** Where the credentials came from, for messages (never the secret). */
  source: string
}

interface DockerConfig {
  auths?: Record<string, { auth?: string; username?: string; password?: string; identitytoken?: string }>
  credHelpers?: Record<string, string>
  credsStore?: string
}

/** `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`. */
export function dockerConfigPath(env: NodeJS.ProcessEnv = process.env): string {
  return join(env.DOCKER_CONFIG ?? join(env.HOME ?? homedir(), '.docker'), 'config.json')
}

/**
 * Credentials for `registry`, first match wins:
 * 1. $STEREOS_REGISTRY_USERNAME + $STEREOS_REGISTRY_PASSWORD (for every registry, or only the
 *    hosts in $STEREOS_REGISTRY_HOSTS, comma-separated, when that is set);
 * 2. the docker config file: `credHelpers[registry]`, then `auths` (`auth` = base64 user:password,
 *    or `username`/`password`, or `identitytoken`), then `credsStore`.
 * None → anonymous (the bearer token flow still runs, without a user).
 */
export function findCredentials(registry: string, env: NodeJS.ProcessEnv = process.env): Credentials | undefined {
  const hosts = (env.STEREOS_REGISTRY_HOSTS ?? '')
    .split(',')
    .map((h) => h.trim())
    .filter(Boolean)
  if (env.STEREOS_REGISTRY_USERNAME && env.STEREOS_REGISTRY_PASSWORD !== undefined && (hosts.length === 0 || hosts.includes(registry))) {
    return { username: env.STEREOS_REGISTRY_USERNAME, password: env.STEREOS_REGISTRY_PASSWORD, source: 'STEREOS_REGISTRY_USERNAME/PASSWORD' }
  }
  const path = dockerConfigPath(env)
  if (!existsSync(path)) return undefined
  let config: DockerConfig
  try {
    config = JSON.parse(readFileSync(path, 'utf8')) as DockerConfig
  } catch (cause) {
    throw new HarnessError('REGISTRY', `${path} is not valid JSON: ${(cause as Error).message}`, {
      fix: 'repair or remove the docker config file (docker login rewrites it)',
      cause,
    })
  }
  const keys = registryKeys(registry)
  const helper = Object.entries(config.credHelpers ?? {}).find(([key]) => keys.includes(normalizeKey(key)))?.[1]
  if (helper) return fromHelper(helper, registry, env)
  const entry = Object.entries(config.auths ?? {}).find(([key]) => keys.includes(normalizeKey(key)))
  if (entry) {
    const [, auth] = entry
    const source = `${path} (auths)`
    if (auth.identitytoken) return { username: auth.username ?? '<token>', password: '', identityToken: auth.identitytoken, source }
    if (auth.auth) {
      const decoded = Buffer.from(auth.auth, 'base64').toString('utf8')
      const colon = decoded.indexOf(':')
      if (colon > 0) return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1), source }
    }
    if (auth.username && auth.password !== undefined) return { username: auth.username, password: auth.password, source }
  }
  if (config.credsStore) return fromHelper(config.credsStore, registry, env)
  return undefined
}

/** Docker Hub's config key is its v1 URL; other keys may carry a scheme or a path. */
function registryKeys(registry: string): string[] {
  return registry === 'index.docker.io' ? ['index.docker.io', 'docker.io', 'registry-1.docker.io'] : [registry]
}

function normalizeKey(key: string): string {
  return key.replace(/^[a-z]+:\/\//, '').replace(/\/.*$/, '')
}

/** docker-credential-<helper> get: the server URL on stdin, `{Username, Secret}` on stdout. */
function fromHelper(helper: string, registry: string, env: NodeJS.ProcessEnv): Credentials | undefined {
  const server = registry === 'index.docker.io' ? 'https://index.docker.io/v1/' : registry
  let out: string
  try {
    out = execFileSync(`docker-credential-${helper}`, ['get'], { input: server, encoding: 'utf8', env, timeout: 15_000, stdio: ['pipe', 'pipe', 'pipe'] })
  } catch (err) {
    const stdout = String((err as { stdout?: string }).stdout ?? '')
    // Helpers answer "credentials not found in native keychain" for unknown servers: anonymous.
    if (/not found/i.test(stdout) || /not found/i.test(String((err as { stderr?: string }).stderr ?? ''))) return undefined
    throw new HarnessError(
      'REGISTRY',
      `the docker credential helper docker-credential-${helper} failed for ${registry}: ${(err as Error).message.split('\n')[0]}`,
      {
        fix: `install docker-credential-${helper} or remove it from ${dockerConfigPath(env)}`,
        cause: err,
      },
    )
  }
  const parsed = JSON.parse(out) as { Username?: string; Secret?: string }
  if (!parsed.Secret) return undefined
  const source = `docker-credential-${helper}`
  if (parsed.Username === '<token>') return { username: '<token>', password: '', identityToken: parsed.Secret, source }
  return { username: parsed.Username ?? '', password: parsed.Secret, source }
}
