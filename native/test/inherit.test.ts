import { spawn, type ChildProcess } from 'node:child_process'
import { closeSync, openSync, readlinkSync, readdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, test } from 'vitest'
import { loadBinding } from '../src/load.js'
import { tempDir } from './support.js'

// QEMU gets the /dev/vhost-vsock fd as `vhostfd=<n>` with the fd placed at n in its stdio array
// (execa/spawn `stdio: [..., fd]`). There is no vhost-vsock device here, so an ordinary file
// stands in: the mechanism is the same (libuv dup2()s it into place in the child).

/** A child that sleeps until killed; `/proc/<pid>/fd` is read while it runs. */
function sleeper(stdio: Array<'ignore' | 'pipe' | 'inherit' | number>): ChildProcess {
  return spawn('sleep', ['30'], { stdio })
}

function fdsOf(pid: number): Map<number, string> {
  const fds = new Map<number, string>()
  for (const n of readdirSync(`/proc/${pid}/fd`)) {
    try {
      fds.set(Number(n), readlinkSync(`/proc/${pid}/fd/${n}`))
    } catch {}
  }
  return fds
}

async function withChild<T>(child: ChildProcess, fn: (pid: number) => T): Promise<T> {
  await new Promise<void>((resolve, reject) => {
    child.once('spawn', resolve)
    child.once('error', reject)
  })
  // exec has happened once /proc/<pid>/exe is sleep, not node.
  for (let i = 0; i < 200 && !readlinkSync(`/proc/${child.pid}/exe`).endsWith('sleep'); i++) await new Promise((r) => setTimeout(r, 5))
  try {
    return fn(child.pid!)
  } finally {
    child.kill('SIGKILL')
  }
}

describe('passing a reserved fd to a child', () => {
  const dir = tempDir('vsock-inherit-')
  const file = join(dir, 'stand-in-for-vhost-vsock')
  writeFileSync(file, '')

  test('an fd in the stdio array shows up at that number in /proc/<pid>/fd of the child', async () => {
    const fd = openSync(file, 'r+') // Node opens with O_CLOEXEC
    try {
      const fds = await withChild(sleeper(['ignore', 'ignore', 'ignore', 'ignore', fd]), fdsOf)
      expect(fds.get(4)).toBe(file)
    } finally {
      closeSync(fd)
    }
  })

  test('the addon opens close-on-exec by default: stdio passing still works, other children do not get it', async () => {
    const b = loadBinding()
    const fd = b.openVhost(file, true)
    expect(fd).toBeGreaterThan(2)
    try {
      const passed = await withChild(sleeper(['ignore', 'ignore', 'ignore', fd]), fdsOf)
      expect(passed.get(3)).toBe(file)
      const other = await withChild(sleeper(['ignore', 'ignore', 'ignore']), fdsOf)
      expect([...other.values()]).not.toContain(file)
    } finally {
      b.close(fd)
    }
  })

  test('without close-on-exec the fd leaks into every child (which would then hold the CID too)', async () => {
    const b = loadBinding()
    const fd = b.openVhost(file, false)
    try {
      const other = await withChild(sleeper(['ignore', 'ignore', 'ignore']), fdsOf)
      expect(other.get(fd)).toBe(file)
    } finally {
      b.close(fd)
    }
  })
})
