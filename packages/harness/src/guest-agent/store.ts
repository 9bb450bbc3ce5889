import { createHash, randomBytes } from 'node:crypto'
import { createWriteStream, existsSync, mkdirSync, renameSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import type { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { Transform } from 'node:stream'
import { HarnessError } from '../errors.js'

const HASH = /^[0-9a-f]{64}$/

/**
 * Content-addressed blobs (sha256): a file shipped once is never sent again to this guest.
 * Blobs are written under a temporary name, verified, then renamed, so a store never holds
 * a blob whose bytes do not match its name.
 */
export class BlobStore {
  constructor(readonly dir: string) {
    mkdirSync(dir, { recursive: true, mode: 0o700 })
  }

  path(hash: string): string {
    if (!HASH.test(hash)) throw new HarnessError('AGENT', `not a sha256 hex digest: ${JSON.stringify(hash)}`)
    return join(this.dir, hash)
  }

  has(hash: string): boolean {
    return existsSync(this.path(hash))
  }

  async put(hash: string, size: number, source: Readable): Promise<void> {
    const final = this.path(hash)
    const temp = join(this.dir, `.${hash}.${randomBytes(4).toString('hex')}`)
    const digest = createHash('sha256')
    let received = 0
    const meter = new Transform({
      transform(chunk: Buffer, _enc, done) {
        received += chunk.length
        if (received > size) return done(new HarnessError('AGENT', `blob ${hash} is larger than the announced ${size} bytes`))
        digest.update(chunk)
        done(null, chunk)
      },
    })
    try {
      await pipeline(source, meter, createWriteStream(temp, { mode: 0o600 }))
      const actual = digest.digest('hex')
      if (received !== size || actual !== hash) {
        throw new HarnessError('AGENT', `blob ${hash} arrived as ${received} bytes with sha256 ${actual} (expected ${size} bytes)`)
      }
      renameSync(temp, final)
    } catch (err) {
      rmSync(temp, { force: true })
      throw err
    }
  }
}
