import { registryScheme } from './reference.js'

/**
 * Where registry credentials may go (STEREOS_REGISTRY_USERNAME/PASSWORD, docker config): the
 * registry they were found for, and a token realm on that same host and port, or on a host
 * the user allowed in $STEREOS_REGISTRY_AUTH_HOSTS (comma-separated host[:port]); Docker Hub's
 * auth.docker.io is built in. Never over plain http unless the registry itself is explicitly
 * http: a loopback address or a host in $STEREOS_REGISTRY_INSECURE (RFC 1918 and .local hosts,
 * http by default, need listing there). A registry's 401 names any realm it likes; without
 * this, the credentials went to whatever host it named, in clear text.
 */
export type CredentialScope = { ok: true } | { ok: false; why: string }

/** Token realms of public registries that live on another host than the registry. */
const KNOWN_REALMS: Record<string, string[]> = { 'index.docker.io': ['auth.docker.io'] }

export function credentialScope(target: URL, registry: string, env: NodeJS.ProcessEnv = process.env): CredentialScope {
  if (target.protocol !== 'https:' && target.protocol !== 'http:') return { ok: false, why: `${target.protocol} is not http or https` }
  if (target.protocol === 'http:' && !explicitlyHttp(registry, env)) {
    return { ok: false, why: `it is plain http, and registry ${registry} is not explicitly http (a loopback address, or listed in STEREOS_REGISTRY_INSECURE)` }
  }
  const own = new URL(`${registryScheme(registry, env)}://${registry}`)
  if (own.hostname === target.hostname && effectivePort(own) === effectivePort(target)) return { ok: true }
  const allowed = [...(KNOWN_REALMS[registry] ?? []), ...list(env.STEREOS_REGISTRY_AUTH_HOSTS)]
  if (allowed.some((host) => host === target.host || host === `${target.hostname}:${effectivePort(target)}`)) return { ok: true }
  return { ok: false, why: `it is not registry ${registry}'s host (allow a separate token server with STEREOS_REGISTRY_AUTH_HOSTS=${target.host})` }
}

/** Loopback, or listed in $STEREOS_REGISTRY_INSECURE by the user. */
function explicitlyHttp(registry: string, env: NodeJS.ProcessEnv = process.env): boolean {
  if (list(env.STEREOS_REGISTRY_INSECURE).includes(registry)) return true
  const host = new URL(`http://${registry}`).hostname
  return host === 'localhost' || host === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(host)
}

function effectivePort(url: URL): string {
  return url.port || (url.protocol === 'https:' ? '443' : '80')
}

function list(value: string | undefined): string[] {
  return (value ?? '')
    .split(',')
    .map((h) => h.trim())
    .filter(Boolean)
}
