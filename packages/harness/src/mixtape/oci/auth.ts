import { HarnessError } from '../../errors.js'
import { DEFAULT_BODY_LIMITS, fetchAnswer, MAX_TOKEN_BYTES, readWholeBody, type BodyLimits } from './body.js'
import { credentialScope } from './credential-scope.js'
import type { Credentials } from './credentials.js'
import { registryScheme } from './reference.js'
import { TransientError, isRetryableStatus } from './retry.js'

export interface Challenge {
  scheme: string
  params: Record<string, string>
}

/** Parse `WWW-Authenticate: Bearer realm="…",service="…",scope="…"` (or `Basic realm="…"`). */
export function parseChallenge(header: string | null): Challenge | undefined {
  if (!header) return undefined
  const match = /^\s*([A-Za-z]+)\s*(.*)$/s.exec(header)
  if (!match) return undefined
  const params: Record<string, string> = {}
  const re = /([A-Za-z_]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*,?/g
  for (let m = re.exec(match[2]!); m; m = re.exec(match[2]!)) params[m[1]!.toLowerCase()] = m[2] !== undefined ? m[2].replace(/\\(.)/g, '$1') : m[3]!
  return { scheme: match[1]!.toLowerCase(), params }
}

export interface AuthenticatorOptions {
  env?: NodeJS.ProcessEnv | undefined
  limits?: BodyLimits | undefined
}

/**
 * Authorization for one registry and repository (pull scope): nothing until the registry
 * challenges, then the anonymous (or credentialed) bearer token flow of the distribution spec, or
 * Basic where the registry asks for it. Tokens are kept for the client's lifetime (a pull).
 * Credentials go only where credentialScope allows; elsewhere the token is asked for anonymously.
 */
export class Authenticator {
  private header: string | undefined
  /** Why the credentials were not sent to the token server (for the denial message). */
  private withheld: string | undefined
  private readonly env: NodeJS.ProcessEnv
  private readonly limits: BodyLimits

  constructor(
    private readonly registry: string,
    private readonly repository: string,
    private readonly credentials: Credentials | undefined,
    private readonly fetchImpl: typeof fetch = fetch,
    options: AuthenticatorOptions = {},
  ) {
    this.env = options.env ?? process.env
    this.limits = options.limits ?? DEFAULT_BODY_LIMITS
  }

  authorization(): string | undefined {
    return this.header
  }

  /**
   * The registry answered 401: obtain a new Authorization for the request to be repeated with,
   * or throw when the registry cannot be satisfied (no usable challenge, refused credentials).
   */
  async onUnauthorized(response: Response): Promise<void> {
    const challenge = parseChallenge(response.headers.get('www-authenticate'))
    const had = this.header
    if (challenge?.scheme === 'bearer' && challenge.params.realm) {
      this.header = `Bearer ${await this.token(challenge)}`
    } else if (challenge?.scheme === 'basic' && this.credentials && !this.credentials.identityToken) {
      const scope = credentialScope(new URL(`${registryScheme(this.registry, this.env)}://${this.registry}/v2/`), this.registry, this.env)
      if (!scope.ok) throw this.denied(`it asks for Basic authentication, and the credentials from ${this.credentials.source} were not sent: ${scope.why}`)
      this.header = `Basic ${Buffer.from(`${this.credentials.username}:${this.credentials.password}`).toString('base64')}`
    } else {
      throw this.denied(
        challenge
          ? `it asks for ${challenge.scheme} authentication${this.credentials ? '' : ' and no credentials were found'}`
          : 'it gave no WWW-Authenticate challenge',
      )
    }
    if (had === this.header) throw this.denied(this.credentials ? `it refused the credentials from ${this.credentials.source}` : 'it refused anonymous access')
  }

  private async token(challenge: Challenge): Promise<string> {
    const realm = challenge.params.realm!
    let url: URL
    try {
      url = new URL(realm)
    } catch {
      throw this.denied(`its token realm "${realm}" is not a URL`)
    }
    const scope = challenge.params.scope ?? `repository:${this.repository}:pull`
    const allowed = this.credentials ? credentialScope(url, this.registry, this.env) : undefined
    const creds = allowed?.ok ? this.credentials : undefined
    if (this.credentials && allowed && !allowed.ok)
      this.withheld = `the credentials from ${this.credentials.source} were not sent to its token server ${url.origin}: ${allowed.why}`
    let response: Response
    if (creds?.identityToken) {
      const form = new URLSearchParams({
        grant_type: 'refresh_token',
        refresh_token: creds.identityToken,
        service: challenge.params.service ?? '',
        scope,
        client_id: 'stereos-harness',
      })
      response = await fetchAnswer(
        this.fetchImpl,
        url,
        { method: 'POST', body: form, headers: { 'content-type': 'application/x-www-form-urlencoded' } },
        this.limits,
      )
    } else {
      if (challenge.params.service) url.searchParams.set('service', challenge.params.service)
      url.searchParams.set('scope', scope)
      const headers: Record<string, string> = {}
      if (creds) headers.authorization = `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}`
      response = await fetchAnswer(this.fetchImpl, url, { headers }, this.limits)
    }
    if (!response.ok) await response.body?.cancel().catch(() => undefined)
    if (isRetryableStatus(response.status))
      throw new TransientError(`token server ${url.host} answered ${response.status}`, response.headers.get('retry-after'))
    if (!response.ok)
      throw this.denied(
        `its token server ${url.origin}${url.pathname} answered ${response.status}${creds ? ` to the credentials from ${creds.source}` : ' to an anonymous request'}`,
      )
    const bytes = await readWholeBody(response, 'the token answer', `${url.origin}${url.pathname}`, MAX_TOKEN_BYTES, this.limits, (message) =>
      this.denied(message),
    )
    const body = parseJson(bytes)
    const token = typeof body.token === 'string' ? body.token : typeof body.access_token === 'string' ? body.access_token : undefined
    if (!token) throw this.denied(`its token server ${url.origin} returned no token`)
    return token
  }

  private denied(why: string): HarnessError {
    const withheld = this.withheld ? `; ${this.withheld}` : ''
    return new HarnessError('REGISTRY', `registry ${this.registry} denied access to ${this.repository}: ${why}${withheld}`, {
      fix: this.withheld
        ? `if that token server is really ${this.registry}'s, allow it with STEREOS_REGISTRY_AUTH_HOSTS (and STEREOS_REGISTRY_INSECURE for a plain-http registry you trust); otherwise the registry is not the one you meant`
        : this.credentials
          ? `check the credentials from ${this.credentials.source} (or that ${this.repository} exists)`
          : `check the name (registries often answer 401 for repositories that do not exist); for a private registry run \`docker login ${this.registry}\` or set STEREOS_REGISTRY_USERNAME and STEREOS_REGISTRY_PASSWORD`,
    })
  }
}

function parseJson(bytes: Buffer): Record<string, unknown> {
  try {
    const value: unknown = JSON.parse(bytes.toString('utf8'))
    return value && typeof value === 'object' ? (value as Record<string, unknown>) : {}
  } catch {
    return {}
  }
}
