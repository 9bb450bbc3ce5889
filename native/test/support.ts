import { existsSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll } from 'vitest'
import { packageRoot } from '../src/load.js'
import { VsockSocket, type VsockSocketOptions } from '../src/socket.js'
import { loadBinding } from '../src/load.js'

export const distDir = join(packageRoot, 'dist')

const temps: string[] = []
// Registered in every test file that imports this module (Vitest isolates modules per file).
afterAll(() => {
  for (const d of temps.splice(0)) rmSync(d, { recursive: true, force: true })
})

/** A fresh directory under the system temp dir, removed after the test file. */
export function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  temps.push(dir)
  return dir
}

/** Child processes run the built JS: fail clearly when dist/ is missing or older than src/. */
export function assertDistFresh(): void {
  const src = join(packageRoot, 'src')
  for (const f of readdirSync(src).filter((f) => f.endsWith('.ts'))) {
    const built = join(distDir, f.replace(/\.ts$/, '.js'))
    if (!existsSync(built) || statSync(built).mtimeMs < statSync(join(src, f)).mtimeMs) {
      throw new Error(`native/dist is missing or older than src/${f}: run \`npm run build -w native\``)
    }
  }
}

/** Two connected VsockSockets over an AF_UNIX socketpair: the stream code without a vsock transport. */
export function socketPair(a: VsockSocketOptions = {}, b: VsockSocketOptions = {}): [VsockSocket, VsockSocket] {
  const out = new Int32Array(2)
  const r = loadBinding().socketpair(out)
  if (r < 0) throw new Error(`socketpair failed: ${r}`)
  return [new VsockSocket(out[0]!, a), new VsockSocket(out[1]!, b)]
}

/** Resolves with everything `s` emits until 'end'. */
export function collect(s: NodeJS.ReadableStream): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    s.on('data', (d: Buffer) => chunks.push(d))
    s.on('end', () => resolve(Buffer.concat(chunks)))
    s.on('error', reject)
  })
}

export function once<T = unknown>(emitter: NodeJS.EventEmitter, event: string): Promise<T> {
  return new Promise((resolve) => emitter.once(event, resolve as (v: T) => void))
}

/** Resolves once `s` has emitted 'close' (at once if it already has). */
export function closed(s: { closed: boolean } & NodeJS.EventEmitter): Promise<void> {
  return s.closed ? Promise.resolve() : new Promise((resolve) => s.once('close', () => resolve()))
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))
