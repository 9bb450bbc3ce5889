import { HarnessError } from '../../errors.js'

/** mb's registry and repository prefix for short names (STEREOS-FACTS §4.1). */
export const DEFAULT_REGISTRY = 'download.stereos.ai'
export const DEFAULT_REPO_PREFIX = 'mixtapes'
const DOCKER_HUB = 'index.docker.io'

/** Path components, tags and digests as the OCI distribution spec writes them. */
const COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/
const TAG = /^[\w][\w.-]{0,127}$/
const DIGEST = /^sha256:[a-f0-9]{64}$/
const REGISTRY = /^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9a-fA-F:]+\])(?::[0-9]{1,5})?$/

export interface MixtapeReference {
  /** What the user wrote. */
  raw: string
  /** `host[:port]` as the API is addressed. */
  registry: string
  repository: string
  /** The tag, when one was given (or implied: `latest` when there is neither tag nor digest). */
  tag: string | undefined
  digest: string | undefined
  /** Local cache name and tag, by mb's rules: `<base>/mixtapes/<name>/<tag>`. */
  name: string
  localTag: string
  /** registry/repository[:tag][@digest] */
  canonical: string
}

/**
 * Parse a mixtape reference the way mb does (`ParseReference` + `mixtapeNameFromRef` +
 * `tagFromRef`): a string without `/` is `download.stereos.ai/mixtapes/<it>`; anything else is a
 * full OCI reference (go-containerregistry's rules: the first component is a registry when it has
 * a `.` or `:` or is `localhost`, else Docker Hub). Default tag `latest`. The local name is the
 * short name before its tag (or digest), or the last repository component; the local tag is the
 * tag, or `latest` for digest references.
 */
export function parseReference(raw: string): MixtapeReference {
  const input = raw.trim()
  const short = !input.includes('/')
  const full = short ? `${DEFAULT_REGISTRY}/${DEFAULT_REPO_PREFIX}/${input}` : input

  const at = full.indexOf('@')
  const namePart = at === -1 ? full : full.slice(0, at)
  const digest = at === -1 ? undefined : full.slice(at + 1)
  if (digest !== undefined && !DIGEST.test(digest)) {
    throw invalid(raw, `the digest "${digest}" is not sha256:<64 lowercase hex digits> (the only algorithm mixtapes use)`)
  }

  const colon = namePart.lastIndexOf(':')
  const hasTag = colon > namePart.lastIndexOf('/')
  const repoPart = hasTag ? namePart.slice(0, colon) : namePart
  const tag = hasTag ? namePart.slice(colon + 1) : digest ? undefined : 'latest'
  if (tag !== undefined && !TAG.test(tag))
    throw invalid(raw, `the tag "${tag}" is not a valid tag (letters, digits, _ . -; at most 128; not starting with . or -)`)

  const slash = repoPart.indexOf('/')
  const first = repoPart.slice(0, slash)
  const explicitRegistry = slash !== -1 && (first.includes('.') || first.includes(':') || first === 'localhost')
  let registry = explicitRegistry ? first : DOCKER_HUB
  let repository = explicitRegistry ? repoPart.slice(slash + 1) : repoPart
  if (registry === 'docker.io') registry = DOCKER_HUB
  if (registry === DOCKER_HUB && !repository.includes('/')) repository = `library/${repository}`
  if (!REGISTRY.test(registry)) throw invalid(raw, `"${registry}" is not a registry host[:port]`)
  for (const component of repository.split('/')) {
    if (!COMPONENT.test(component)) throw invalid(raw, `the repository component "${component}" must be lowercase letters and digits, separated by . _ __ or -`)
  }

  const name = short ? input.split(/[:@]/)[0]! : repository.slice(repository.lastIndexOf('/') + 1)
  const localTag = hasTag && !digest ? tag! : 'latest'
  const canonical = `${registry}/${repository}${tag ? `:${tag}` : ''}${digest ? `@${digest}` : ''}`
  return { raw, registry, repository, tag, digest, name, localTag, canonical }
}

/**
 * http for loopback, `localhost`, `*.local` and RFC 1918 hosts (go-containerregistry's
 * `Registry.Scheme`), and for hosts listed in $STEREOS_REGISTRY_INSECURE (comma-separated);
 * https for everything else.
 */
export function registryScheme(registry: string, env: NodeJS.ProcessEnv = process.env): 'http' | 'https' {
  const insecure = (env.STEREOS_REGISTRY_INSECURE ?? '')
    .split(',')
    .map((h) => h.trim())
    .filter(Boolean)
  if (insecure.includes(registry)) return 'http'
  const host = registry.startsWith('[') ? registry.slice(0, registry.indexOf(']') + 1) : registry.replace(/:\d+$/, '')
  if (host === 'localhost' || host.endsWith('.localhost') || host.endsWith('.local') || host === '[::1]') return 'http'
  const ip = /^(\d+)\.(\d+)\.\d+\.\d+$/.exec(host)
  if (ip) {
    const [a, b] = [Number(ip[1]), Number(ip[2])]
    if (a === 127 || a === 10 || (a === 172 && b >= 16 && b <= 31) || (a === 192 && b === 168)) return 'http'
  }
  return 'https'
}

function invalid(raw: string, why: string): HarnessError {
  return new HarnessError('INVALID_OPTIONS', `"${raw}" is not a mixtape reference: ${why}`, {
    fix: 'name a mixtape like coder, coder:2026.03.01.0, registry.example/mixtapes/coder:tag or …@sha256:<digest>',
  })
}
