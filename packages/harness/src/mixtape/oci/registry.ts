import { createHash } from 'node:crypto'
import { HarnessError } from '../../errors.js'
import { Authenticator } from './auth.js'
import { DEFAULT_BODY_LIMITS, fetchAnswer, MAX_MANIFEST_BYTES, readErrorText, readWholeBody, type BodyLimits } from './body.js'
import type { Credentials } from './credentials.js'
import { MANIFEST_ACCEPT } from './media-types.js'
import { registryScheme, type MixtapeReference } from './reference.js'
import { TransientError, isRetryableStatus, withRetries, type RetryNotice, type RetryPolicy } from './retry.js'

export interface RegistryClientOptions {
  credentials: Credentials | undefined
  retry: RetryPolicy
  onRetry?: ((notice: RetryNotice) => void) | undefined
  fetch?: typeof fetch | undefined
  env?: NodeJS.ProcessEnv | undefined
  /** Time bound for bodies held in memory (manifests, tokens, error text); sizes are fixed. */
  bodyLimits?: BodyLimits | undefined
}

export interface FetchedManifest {
  mediaType: string
  /** sha256 of the bytes served, checked against the digest asked for or announced. */
  digest: string
  bytes: Buffer
  json: Record<string, unknown>
}

export interface BlobResponse {
  /** Offset of the first byte of `body` within the blob: the Range start, or 0 when the registry ignored Range. */
  start: number
  body: AsyncIterable<Uint8Array>
  /** Give up on the body (close the connection). */
  cancel(): void
}

/** The distribution API of one repository, on fetch: manifests by tag or digest, blobs by digest with Range. */
export class RegistryClient {
  readonly base: string
  private readonly auth: Authenticator
  private readonly fetchImpl: typeof fetch
  private readonly limits: BodyLimits

  constructor(
    readonly ref: Pick<MixtapeReference, 'registry' | 'repository'>,
    private readonly options: RegistryClientOptions,
  ) {
    this.fetchImpl = options.fetch ?? fetch
    this.limits = options.bodyLimits ?? DEFAULT_BODY_LIMITS
    this.base = `${registryScheme(ref.registry, options.env)}://${ref.registry}/v2/${ref.repository}`
    this.auth = new Authenticator(ref.registry, ref.repository, options.credentials, this.fetchImpl, { env: options.env, limits: this.limits })
  }

  /** GET a manifest or index; 404 is MIXTAPE_NOT_FOUND, a digest mismatch MIXTAPE_INVALID. */
  async manifest(reference: string): Promise<FetchedManifest> {
    const url = `${this.base}/manifests/${reference}`
    return withRetries(`GET ${url}`, this.options.retry, this.options.onRetry, async () => {
      const response = await this.send(url, { accept: MANIFEST_ACCEPT })
      if (response.status === 404) {
        await response.body?.cancel()
        throw new HarnessError(
          'MIXTAPE_NOT_FOUND',
          `registry ${this.ref.registry} has no manifest ${this.ref.repository}${reference.startsWith('sha256:') ? '@' : ':'}${reference} (404)`,
          {
            fix: 'check the mixtape name and tag (tags look like latest, nightly or 2026.03.01.0)',
          },
        )
      }
      await this.failUnlessOk(response, url)
      const bytes = await readWholeBody(
        response,
        'the manifest',
        url,
        MAX_MANIFEST_BYTES,
        this.limits,
        (message) => new HarnessError('MIXTAPE_INVALID', message, { fix: 'check the reference: this is not a mixtape manifest' }),
      )
      const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`
      const announced = response.headers.get('docker-content-digest')
      const expected = reference.startsWith('sha256:') ? reference : announced?.startsWith('sha256:') ? announced : undefined
      if (expected && expected !== digest) {
        throw new HarnessError(
          'MIXTAPE_INVALID',
          `registry ${this.ref.registry} served a manifest for ${this.ref.repository}@${expected} whose content hashes to ${digest}`,
          {
            fix: 'the registry or a proxy in between altered the manifest; pull again, and report it to the registry operator if it persists',
          },
        )
      }
      let json: Record<string, unknown>
      try {
        json = JSON.parse(bytes.toString('utf8')) as Record<string, unknown>
      } catch {
        throw new HarnessError('MIXTAPE_INVALID', `the manifest at ${url} is not JSON`, {
          fix: 'the image is published wrongly: republish it, or pull another tag',
        })
      }
      const header = response.headers.get('content-type')?.split(';')[0]?.trim()
      const mediaType = typeof json.mediaType === 'string' ? json.mediaType : (header ?? '')
      return { mediaType, digest, bytes, json }
    })
  }

  /** One GET of a blob from `offset` (a Range request when > 0). Retrying is the caller's: it knows how far it got. */
  async blob(digest: string, offset: number): Promise<BlobResponse> {
    const url = `${this.base}/blobs/${digest}`
    const response = await this.send(url, offset > 0 ? { range: `bytes=${offset}-` } : {})
    if (response.status === 404) {
      await response.body?.cancel()
      throw new HarnessError('MIXTAPE_INVALID', `registry ${this.ref.registry} has no blob ${digest} that ${this.ref.repository}'s manifest lists (404)`, {
        fix: 'the image is published incompletely: republish it, or pull another tag',
      })
    }
    if (response.status === 416) {
      await response.body?.cancel()
      return { start: offset, body: (async function* () {})(), cancel: () => undefined }
    }
    await this.failUnlessOk(response, url)
    let start = 0
    if (response.status === 206) {
      const range = /^bytes (\d+)-/.exec(response.headers.get('content-range') ?? '')
      start = range ? Number(range[1]) : NaN
      if (start !== offset) {
        await response.body?.cancel()
        throw new TransientError(`the registry answered Range bytes=${offset}- with Content-Range "${response.headers.get('content-range')}"`)
      }
    }
    const body = response.body
    if (!body) return { start, body: (async function* () {})(), cancel: () => undefined }
    return { start, body: body as AsyncIterable<Uint8Array>, cancel: () => void body.cancel().catch(() => undefined) }
  }

  /** One request, repeated with new credentials after a 401 challenge. */
  private async send(url: string, headers: Record<string, string>): Promise<Response> {
    for (let round = 0; ; round++) {
      const authorization = this.auth.authorization()
      const response = await fetchAnswer(this.fetchImpl, url, { headers: { ...headers, ...(authorization ? { authorization } : {}) } }, this.limits)
      if (response.status !== 401 || round === 2) return response
      await response.body?.cancel()
      await this.auth.onUnauthorized(response)
    }
  }

  private async failUnlessOk(response: Response, url: string): Promise<void> {
    if (response.ok) return
    const text = (await readErrorText(response, this.limits)).slice(0, 300).trim()
    const detail = `${response.status} ${response.statusText}${text ? `: ${text}` : ''}`
    if (isRetryableStatus(response.status)) throw new TransientError(`the registry answered ${detail}`, response.headers.get('retry-after'))
    throw new HarnessError('REGISTRY', `GET ${url} was answered ${detail}`, {
      fix:
        response.status === 401 || response.status === 403
          ? `check your access to ${this.ref.repository} on ${this.ref.registry} (docker login, or STEREOS_REGISTRY_USERNAME/PASSWORD)`
          : 'check the reference and the registry; pull again',
    })
  }
}
