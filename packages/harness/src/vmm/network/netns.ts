import { readlinkSync } from 'node:fs'
import { execa } from 'execa'
import { HarnessError } from '../../errors.js'
import { which } from '../../host/which.js'
import { sleep } from '../../host/sleep.js'
import { entryScript } from '../../host/entry-script.js'

/**
 * QEMU in a network namespace of its own. SLIRP's forwards then listen on that namespace's
 * 127.0.0.1, which no other process on the host can reach; a relay inside the namespace
 * (relay-main.ts) exposes each one as a unix socket in the VM dir (0700), so only the user who
 * booted the VM (and root) can talk to stereosd, the agent or sshd. stereosd has no
 * authentication: whoever reaches port 1024 can inject an SSH key and become root in the guest.
 *
 * root makes a plain network namespace; other users make a user namespace with it (mapping
 * themselves to root there, so the wrapper may bring up loopback) and the wrapper then drops
 * every capability before QEMU and the relay run.
 */
export type NetnsSupport = { ok: true; userns: boolean; detail: string } | { ok: false; userns: boolean; reason: string; fix: string }

/** A unix socket path must fit sockaddr_un.sun_path (108 bytes with the NUL). */
const MAX_UNIX_PATH = 107

const WRAPPER = [
  'ip link set lo up || { echo "stereos-harness: cannot bring up loopback in QEMU\'s network namespace" >&2; exit 125; }',
  // $1 setpriv caps args (one word or empty), $2 node, $3 relay script, $4 forwards JSON, then QEMU.
  // $5: QEMU's --pdeathsig (empty for a detachable QEMU, which may outlive its runner).
  'caps=$1 node=$2 relay=$3 forwards=$4 pdeath=$5; shift 5',
  // The relay must not hold fds meant for QEMU (fd 3: a vhost-vsock CID reservation).
  // $$ (this shell, soon QEMU) lets the relay see a parent that died before its pdeathsig was set.
  'setpriv --pdeathsig KILL $caps -- "$node" "$relay" "$forwards" $$ </dev/null 3>&- &',
  'exec setpriv $pdeath $caps -- "$@"',
].join('\n')

export interface RelayForward {
  /** Unix socket to create (in the VM dir). */
  path: string
  /** Port QEMU forwards from inside the namespace (its hostfwd host port). */
  port: number
}

export interface NetnsCommandOptions {
  /** Absolute QEMU binary and its argv. */
  binary: string
  argv: string[]
  forwards: RelayForward[]
  /** Make a user namespace too (default: when not root). */
  userns?: boolean
  /** QEMU dies with its runner (default); false for a detachable QEMU. */
  pdeathsig?: boolean
}

export function defaultUserns(): boolean {
  return process.getuid?.() !== 0
}

function unshareArgs(userns: boolean): string[] {
  return userns ? ['--user', '--map-root-user', '--net'] : ['--net']
}

/**
 * The command that starts QEMU in its own network namespace with the relay beside it. QEMU keeps
 * the PID of the spawned process (unshare, sh and setpriv each exec the next) and still gets
 * `--pdeathsig KILL`, so it dies with its runner and the orphan sweep finds it by its argv.
 */
export function netnsCommand(options: NetnsCommandOptions): { file: string; args: string[] } {
  const userns = options.userns ?? defaultUserns()
  for (const forward of options.forwards) {
    if (Buffer.byteLength(forward.path) > MAX_UNIX_PATH) {
      throw new HarnessError('INVALID_OPTIONS', `the VM's unix socket ${forward.path} is longer than a unix socket path may be (${MAX_UNIX_PATH} bytes)`, {
        fix: 'use a shorter options.runtimeDir (or $STEREOS_RUNTIME_DIR)',
      })
    }
  }
  const caps = userns ? '--bounding-set=-all' : ''
  return {
    file: which('unshare') ?? 'unshare',
    args: [
      ...unshareArgs(userns),
      '--',
      'sh',
      '-c',
      WRAPPER,
      'stereos-netns',
      caps,
      process.execPath,
      entryScript('vmm/network/relay-main'),
      JSON.stringify(options.forwards),
      options.pdeathsig === false ? '' : '--pdeathsig KILL',
      options.binary,
      ...options.argv,
    ],
  }
}

const probes = new Map<boolean, Promise<NetnsSupport>>()

/**
 * Whether this user can give QEMU a private network namespace here: runs the wrapper's own
 * first step (unshare + loopback up) once per process. Ubuntu 23.10+ (AppArmor
 * `apparmor_restrict_unprivileged_userns`) and hosts with `user.max_user_namespaces=0` refuse it.
 */
export function probeNetns(userns = defaultUserns()): Promise<NetnsSupport> {
  let probe = probes.get(userns)
  if (!probe) {
    probe = runProbe(userns)
    probes.set(userns, probe)
  }
  return probe
}

async function runProbe(userns: boolean): Promise<NetnsSupport> {
  const missing = ['unshare', 'setpriv', 'ip', 'sh'].filter((tool) => !which(tool))
  if (missing.length) {
    return { ok: false, userns, reason: `${missing.join(', ')} not found on PATH`, fix: 'apt-get install util-linux iproute2' }
  }
  const result = await execa('unshare', [...unshareArgs(userns), '--', 'sh', '-c', 'ip link set lo up'], { reject: false, timeout: 10_000 })
  if (result.exitCode === 0) {
    return { ok: true, userns, detail: userns ? 'a user + network namespace per VM (unprivileged)' : 'a network namespace per VM' }
  }
  const said = `${result.stderr}`.trim().split('\n')[0] || `exit ${result.exitCode}`
  return {
    ok: false,
    userns,
    reason: `\`unshare ${unshareArgs(userns).join(' ')}\` failed: ${said}`,
    fix: userns ? USERNS_FIX : 'check that unshare(2) with CLONE_NEWNET is allowed (seccomp, container runtime)',
  }
}

const USERNS_FIX =
  'allow unprivileged user namespaces: on Ubuntu 23.10+/24.04 `sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0` ' +
  '(persist it in /etc/sysctl.d/, or give unshare an AppArmor profile with `userns,`); elsewhere `sudo sysctl -w user.max_user_namespaces=15000` ' +
  '(Debian kernels before 5.10: kernel.unprivileged_userns_clone=1)'

/**
 * Waits until `pid` runs in a network namespace other than ours (unshare has run), so nothing
 * that joins "its" namespace can land in the host's by racing the exec chain.
 */
export async function waitForOwnNetns(pid: number, deadline: number): Promise<string> {
  const ours = readlinkSync('/proc/self/ns/net')
  for (;;) {
    let theirs: string | undefined
    try {
      theirs = readlinkSync(`/proc/${pid}/ns/net`)
    } catch {
      throw new Error(`process ${pid} exited before its network namespace was set up`)
    }
    if (theirs !== ours) return theirs
    if (Date.now() > deadline) throw new Error(`process ${pid} is still in the host's network namespace`)
    await sleep(10)
  }
}
