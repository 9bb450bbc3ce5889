import { spawn } from 'node:child_process'
import { mkdirSync } from 'node:fs'
import { dirname } from 'node:path'
import { HarnessError } from '../errors.js'

export interface LockRequest {
  path: string
  /** `shared` for readers (pulls, against a prune), `exclusive` otherwise. */
  mode?: 'exclusive' | 'shared'
}

export interface LockOptions {
  /** Called once when the locks are not all granted within 100 ms (another process holds one). */
  onWait?: (() => void) | undefined
}

/** File descriptors 3–9: what every POSIX sh can redirect. */
const FDS_PER_HOLDER = 7

/**
 * Take flock(2) locks on `requests`, in order, across processes; the returned function releases
 * them. Node has no flock, so a child shell opens the lock files on fds 3–9, takes each lock with
 * util-linux `flock <fd>`, says so, and then holds them (as `cat`) until its stdin closes: the
 * kernel releases them when we close that pipe or when this process dies in any way, so a crashed
 * pull never leaves a stale lock. One child holds up to 7 locks (a pull needs two children: one
 * for the cache and the tag, one for the blobs it lacks), because forking a large Node process
 * costs tens of milliseconds. Callers take locks in a fixed order (cache, tag, blobs sorted by
 * digest), so holders never wait on each other in a cycle. Lock files are never deleted (that
 * would split waiters across two inodes).
 */
export async function acquireLocks(requests: LockRequest[], options: LockOptions = {}): Promise<() => Promise<void>> {
  const releases: (() => Promise<void>)[] = []
  const waitNotice = setTimeout(() => options.onWait?.(), 100)
  try {
    for (let i = 0; i < requests.length; i += FDS_PER_HOLDER) releases.push(await holder(requests.slice(i, i + FDS_PER_HOLDER)))
  } catch (err) {
    await Promise.all(releases.map((release) => release()))
    throw err
  } finally {
    clearTimeout(waitNotice)
  }
  let released: Promise<void> | undefined
  return () => (released ??= Promise.all(releases.reverse().map((release) => release())).then(() => undefined))
}

export async function withLocks<T>(requests: LockRequest[], options: LockOptions, fn: () => Promise<T>): Promise<T> {
  const release = await acquireLocks(requests, options)
  try {
    return await fn()
  } finally {
    await release()
  }
}

async function holder(requests: LockRequest[]): Promise<() => Promise<void>> {
  const steps = requests.map((r, i) => {
    mkdirSync(dirname(r.path), { recursive: true })
    return `exec ${i + 3}>>"$${i + 1}" && flock ${r.mode === 'shared' ? '-s' : '-x'} ${i + 3}`
  })
  const script = `${steps.join(' && ')} && echo locked && exec cat >/dev/null`
  const child = spawn('sh', ['-c', script, 'sh', ...requests.map((r) => r.path)], { stdio: ['pipe', 'pipe', 'pipe'] })
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()))
  let stderr = ''
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()))
  try {
    await new Promise<void>((resolve, reject) => {
      child.once('error', reject)
      child.stdout.once('data', () => resolve())
      child.once('close', (code) => {
        const missing = /flock: (not found|command not found)|flock: No such file/.test(stderr) || code === 127
        reject(
          missing
            ? new HarnessError('HOST', 'flock is not installed (the harness caches lock with it)', {
                fix: 'install util-linux (Debian/Ubuntu: apt-get install util-linux)',
              })
            : new HarnessError('HOST', `could not lock ${requests.map((r) => r.path).join(', ')} (exit ${code}): ${stderr.trim()}`, {
                fix: 'check that the harness cache directory is writable',
              }),
        )
      })
    })
  } catch (err) {
    child.stdin.destroy()
    throw err
  }
  let released: Promise<void> | undefined
  return () => {
    released ??= new Promise<void>((resolve) => child.stdin.end(resolve)).then(() => exited)
    return released
  }
}
