import { Socket } from 'node:net'
import { execa } from 'execa'
import { which } from '../../host/which.js'
import { waitForOwnNetns } from './netns.js'

/**
 * Outbound network for a VM whose QEMU runs in a private network namespace: slirp4netns (a
 * second user-mode NAT, in the host's namespace) gives that namespace a tap with a default route,
 * so the guest's NAT traffic leaves as before. `--disable-host-loopback` keeps the guest off the
 * host's 127.0.0.1 (where other VMs' and users' services listen). Without slirp4netns the guest
 * still boots and the harness reaches it; it just has no way out.
 */
export interface Egress {
  /** Ends slirp4netns (QEMU's exit does not: it would hold the namespace open). */
  stop(): void
  /**
   * Stop holding this process open (a detached VM outlives it). slirp4netns still ends when this
   * process does (parent-death signal), so a kept VM has no outbound network after that.
   */
  unref(): void
  /** Settles when slirp4netns has configured the namespace, or with the reason it could not. */
  ready: Promise<void>
}

export function egressAvailable(): string | undefined {
  return which('slirp4netns')
}

/**
 * Start slirp4netns for the namespace of `pid` (the spawned QEMU). With a user namespace it joins
 * that too (it needs CAP_NET_ADMIN there to create the tap), as the same user. Parent-death
 * signal: it dies with the runner like QEMU does.
 */
export function startEgress(pid: number, userns: boolean, log: (line: string) => void): Egress {
  const slirp = egressAvailable()
  if (!slirp) return { stop: () => undefined, unref: () => undefined, ready: Promise.reject(new Error('slirp4netns not found on PATH')) }
  let child: ReturnType<typeof execa> | undefined
  let stopped = false
  let held = true
  const ready = (async () => {
    await waitForOwnNetns(pid, Date.now() + 10_000)
    if (stopped) return
    const args = [
      '--configure',
      '--disable-host-loopback',
      '--mtu=65520',
      '--netns-type=path',
      ...(userns ? [`--userns-path=/proc/${pid}/ns/user`] : []),
      `/proc/${pid}/ns/net`,
      'tap0',
    ]
    const setpriv = which('setpriv')
    const [file, argv] = setpriv ? [setpriv, ['--pdeathsig', 'KILL', '--', slirp, ...args]] : [slirp, args]
    child = execa(file, argv, { reject: false, stdio: ['ignore', 'pipe', 'pipe'], cleanup: true })
    const running = child
    if (!held) release(running)
    await new Promise<void>((resolve, reject) => {
      let said = ''
      const hear = (chunk: Buffer) => {
        said += chunk.toString()
        // slirp4netns prints this once the tap is up and configured.
        if (/sent tapfd/.test(said)) resolve()
      }
      running.stdout?.on('data', hear)
      running.stderr?.on('data', hear)
      void running.then((result) => {
        if (!stopped) reject(new Error(`slirp4netns exited (${result.exitCode ?? result.signal}): ${said.trim().split('\n').slice(-2).join(' | ')}`))
      })
    })
  })()
  ready.catch((err: unknown) => {
    if (!stopped) log(`the guest has no outbound network: ${(err as Error).message}`)
  })
  return {
    ready,
    stop() {
      stopped = true
      child?.kill('SIGKILL')
    },
    unref() {
      held = false
      if (child) release(child)
    },
  }
}

/** The child and its stdout/stderr pipes stop counting as work for our event loop (still read while we run). */
function release(child: ReturnType<typeof execa>): void {
  const node = child.nodeChildProcess
  node.unref()
  for (const stream of [node.stdout, node.stderr]) if (stream instanceof Socket) stream.unref()
}
