import { spawn } from 'node:child_process'
import { dirname, join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { afterAll, describe, expect, test } from 'vitest'
import { acquireLocks } from '../src/host/lock.js'
import { removeTempDirs, tempDir } from './support/registry.js'

afterAll(removeTempDirs)

const dist = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'host', 'lock.js')
const dir = () => tempDir('sh-lock-')

/** Resolves with how long acquiring took, and the release. */
async function timed(paths: { path: string; mode?: 'shared' | 'exclusive' }[], onWait?: () => void) {
  const started = performance.now()
  const release = await acquireLocks(paths, { onWait })
  return { ms: performance.now() - started, release }
}

describe('cross-process locks (flock held by a child)', () => {
  test('exclusive: the second waits (onWait is told) until the first releases', async () => {
    const path = join(dir(), 'a.lock')
    const first = await acquireLocks([{ path }])
    const order: string[] = []
    let waited = false
    const second = timed([{ path }], () => (waited = true)).then((r) => {
      order.push('second')
      return r
    })
    await new Promise((resolve) => setTimeout(resolve, 300))
    order.push('release first')
    await first()
    const { release } = await second
    expect(order).toEqual(['release first', 'second'])
    expect(waited).toBe(true)
    await release()
  })

  test('shared holders coexist; an exclusive one waits for all of them', async () => {
    const path = join(dir(), 'cache.lock')
    const a = await acquireLocks([{ path, mode: 'shared' }])
    const b = await timed([{ path, mode: 'shared' }])
    let granted = false
    const exclusive = acquireLocks([{ path, mode: 'exclusive' }]).then((release) => ((granted = true), release))
    await new Promise((resolve) => setTimeout(resolve, 200))
    await a()
    await new Promise((resolve) => setTimeout(resolve, 100))
    expect(granted).toBe(false)
    await b.release()
    await (await exclusive)()
    expect(granted).toBe(true)
  })

  test('more locks than one holder carries (7) are taken and released together', async () => {
    const d = dir()
    const paths = Array.from({ length: 10 }, (_, i) => ({ path: join(d, `blob-${i}.lock`) }))
    const release = await acquireLocks(paths)
    let waited = false
    const again = acquireLocks([paths[9]!], { onWait: () => (waited = true) })
    await new Promise((resolve) => setTimeout(resolve, 200))
    expect(waited).toBe(true)
    await release()
    await (await again)()
  })

  test('a holder that is SIGKILLed releases its lock (the kernel does)', async () => {
    const path = join(dir(), 'tag.lock')
    const script = `import { acquireLocks } from ${JSON.stringify(pathToFileURL(dist).href)}; await acquireLocks([{ path: ${JSON.stringify(path)} }]); console.log('held'); setInterval(() => {}, 1000)`
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] })
    await new Promise<void>((resolve) => child.stdout.once('data', () => resolve()))
    let killed = false
    const acquiredAfterKill = acquireLocks([{ path }]).then((release) => ({ killed, release }))
    await new Promise((resolve) => setTimeout(resolve, 200))
    killed = true
    child.kill('SIGKILL')
    const { killed: wasKilled, release } = await acquiredAfterKill
    expect(wasKilled).toBe(true)
    await release()
  })
})
