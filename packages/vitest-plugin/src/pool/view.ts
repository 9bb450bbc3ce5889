import { realpathSync, statSync } from 'node:fs'
import { homedir } from 'node:os'
import { dirname, parse, sep } from 'node:path'
import { HarnessError, type Sandbox, VIEW_9P_OPTIONS, VIEW_STATE_DIR } from '@stereos/harness'
import { chooseTestUser, type Identity, type ImageIds, imageIds, type TestUserChoice } from './test-user.js'
import type { PoolVm } from './vm.js'

/**
 * The guest's view of the project: each view root is a host directory shared read-only over 9p
 * (QEMU `readonly=on`: not even guest root can write through it), remounted page-cached in the
 * guest, and laid under an overlay at the host's absolute path. Reads are served from the guest's
 * page cache after the first time; writes land in the overlay's upper dir on the VM's disk and
 * are discarded with the VM. Nothing the guest writes reaches the host this way.
 */
export interface ViewPlan {
  /** Host directories (real paths, none inside another), shown at the same paths in the guest. */
  roots: string[]
  /** The project's root (a real path inside one of the roots): what the test user owns in the guest. */
  project: string
}

/** Guest paths a view root must not shadow: the guest's own system (and stereosd refuses them). */
const GUEST_SYSTEM = ['/nix', '/etc', '/bin', '/sbin', '/lib', '/lib64', '/usr', '/boot', '/dev', '/proc', '/sys', '/run', '/opt/stereos-harness']

/** Where stereosd first mounts each share (it mounts every share it is given, without caching). */
export const STAGING = '/mnt/stereos-view'

function commonAncestor(paths: string[]): string {
  const split = paths.map((p) => p.split(sep))
  const first = split[0] ?? []
  let n = 0
  while (n < first.length && split.every((parts) => parts[n] === first[n])) n++
  return first.slice(0, n).join(sep) || sep
}

/** The `node_modules` directory a package lives in (its package manager's root for it). */
function nodeModulesOf(path: string): string {
  const at = path.lastIndexOf(`${sep}node_modules${sep}`)
  return at === -1 ? dirname(path) : path.slice(0, at + `${sep}node_modules`.length)
}

/**
 * A directory that holds the user's own files beyond the project: never shared whole. `homes`
 * holds the home directory as named and as realpath'd: the dirs compared are realpath'd, so a
 * home reached through a link (/home/u -> /data/u) must be known by its real path too.
 */
function tooBroad(dir: string, homes: readonly string[]): boolean {
  return dir === parse(dir).root || homes.some((home) => dir === home || home.startsWith(`${dir}${sep}`))
}

function homesOf(home: string): string[] {
  try {
    return [...new Set([home, realpathSync(home)])]
  } catch {
    return [home]
  }
}

/**
 * What the guest must see: the project root, the Vitest the host runs (the guest imports it
 * from `distPath`: a second copy breaks "current suite" tracking) and this plugin (the guest
 * entry). Normally one root, the directory holding all three (a repo or workspace). When that
 * would be the home directory or `/` (Vitest installed globally, e.g. under nvm), the project
 * and the `node_modules` dirs holding Vitest and the plugin are shared separately instead:
 * `~/.ssh` and the rest of home never reach the guest.
 */
export function viewRoots(projectRoot: string, distPath: string, pluginDir: string, home = homedir()): string[] {
  const [project, vitest, plugin] = [projectRoot, distPath, pluginDir].map((p) => realpathSync(p)) as [string, string, string]
  const homes = homesOf(home)
  const whole = commonAncestor([project, vitest, plugin])
  const roots = tooBroad(whole, homes) ? [project, nodeModulesOf(vitest), nodeModulesOf(plugin)] : [whole]
  const unique = [...new Set(roots)].sort()
  const minimal = unique.filter((root) => !unique.some((other) => other !== root && root.startsWith(`${other}${sep}`)))
  for (const root of minimal) {
    if (tooBroad(root, homes)) {
      throw new HarnessError(
        'INVALID_OPTIONS',
        `the stereos pool would have to share ${root} with the guest to show it the project (${project}) and Vitest (${vitest})`,
        {
          fix: 'install vitest and @stereos/vitest-plugin in the project (or its workspace) rather than globally, and keep the project out of the home directory root',
        },
      )
    }
    const system = GUEST_SYSTEM.find((s) => root === s || root.startsWith(`${s}/`))
    if (system) {
      throw new HarnessError('INVALID_OPTIONS', `the project's files live under ${system} (${root}), which is part of the guest's own system`, {
        fix: 'move the project elsewhere (e.g. under /home, /srv or /work)',
      })
    }
  }
  return minimal
}

/** The shares a view needs, as Sandbox `shared` entries (staged by stereosd, remounted by mountView). */
export function viewShares(plan: ViewPlan): { host: string; guest: string; readonly: true }[] {
  return plan.roots.map((root, i) => ({ host: root, guest: `${STAGING}/${i}`, readonly: true }))
}

/**
 * Runs as root in the guest: for each share, replace stereosd's uncached mount by a page-cached
 * one (9p `cache=loose`: the host side is read-only and the view lives as long as the VM) and put
 * an overlay with a disk-backed upper dir at the host path. Also makes a home for the test user.
 *
 * The test user owns in the view what the host user owns on the host. 9p shows the host's ids as
 * QEMU sees them: as they are, or, when QEMU runs in a user namespace that maps the host user to
 * root (a non-root host user's private network), the host user's files as 0:0 and everyone else's
 * as 65534. Which one is read off each root (its guest uid against its host uid). Where the ids the
 * guest sees are not the test user's (test-user.ts), the project (Vitest's root, not the whole
 * view: a workspace's other packages stay readable) is handed over: chown copies up, with
 * `metacopy=on` only the metadata (~2 ms an entry under TCG); the walk skips `node_modules` and
 * `.git` (dependencies and history, not files tests write) and, where the kernel lacks metacopy,
 * hands over directories only (new files can be made, old ones not rewritten). Dirs the host user
 * cannot read (QEMU cannot either) make find complain; what it could reach is handed over.
 * Arguments: host uid gid, test uid gid, project, then (tag staging target host-owner-uid) per root.
 */
const MOUNT_SCRIPT = `set -eu
V=${VIEW_STATE_DIR}
huid=$1 hgid=$2 uid=$3 gid=$4 project=$5
shift 5
mkdir -p "$V/home"
chown "$uid:$gid" "$V/home"
i=0
while [ $# -ge 4 ]; do
  tag=$1 staging=$2 target=$3 owner=$4
  shift 4
  umount "$staging" 2>/dev/null || true
  mkdir -p "$V/$i/lower" "$V/$i/upper" "$V/$i/work" "$target"
  mount -t 9p -o ${VIEW_9P_OPTIONS} "$tag" "$V/$i/lower"
  dirs="lowerdir=$V/$i/lower,upperdir=$V/$i/upper,workdir=$V/$i/work"
  suid=$huid sgid=$hgid
  [ "$(stat -c %u "$V/$i/lower")" = "$owner" ] || { suid=0; sgid=0; }
  i=$((i + 1))
  case "$project" in "$target" | "$target"/*) mine=1 ;; *) mine= ;; esac
  if [ -z "$mine" ] || [ "$suid:$sgid" = "$uid:$gid" ]; then
    mount -t overlay stereos-view -o "$dirs" "$target"
    continue
  fi
  only=
  mount -t overlay stereos-view -o "$dirs,metacopy=on" "$target" 2>/dev/null || {
    mount -t overlay stereos-view -o "$dirs" "$target"
    only="-type d"
  }
  find "$project" \\( -name node_modules -o -name .git \\) -prune -o $only \\( -user "$suid" -o -group "$sgid" \\) -exec chown -h "$uid:$gid" {} + 2>/dev/null || :
done
`

/** The guest HOME of test processes (owned by the test user, on the VM's disk). */
export const GUEST_HOME = `${VIEW_STATE_DIR}/home`

/** The host user running Vitest: the test user in the guest unless test-user.ts maps it. */
function hostIdentity(): Identity {
  return { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 }
}

/** The uids and gids the guest image names (its own /etc/passwd and /etc/group). */
async function readImageIds(sandbox: Sandbox): Promise<ImageIds> {
  // Read by the agent itself: no guest process to start (~0.1-0.2 s each under TCG).
  const read = (path: string) => sandbox.readFile(path, { maxBytes: 4 * 1024 * 1024 }).then((b) => b.toString('utf8'))
  const [passwd, group] = await Promise.all([read('/etc/passwd'), read('/etc/group')])
  return imageIds(passwd, group)
}

/**
 * Lay out the view in a freshly booted VM, owned by the test user `testUser` picks; returns that
 * user. `firstShare` is the index in the sandbox's `shared` of the first view share (its 9p tag
 * is `share<i>`).
 */
export async function mountView(sandbox: Sandbox, plan: ViewPlan, firstShare: number, testUser: TestUserChoice): Promise<Identity> {
  const agent = await sandbox.agent()
  if (!agent.info.root) {
    throw new HarnessError(
      'INVALID_OPTIONS',
      `the stereos pool needs the guest agent to run as root to lay out the project view, but it runs as ${agent.info.user}`,
      {
        fix: "leave `bootstrap` unset (the pool uses 'ssh': admin's passwordless sudo, as on every stereOS mixtape) or use a mixtape whose admin user has sudo",
      },
    )
  }
  const host = hostIdentity()
  const who = chooseTestUser(host, await readImageIds(sandbox), testUser)
  const ids = [host.uid, host.gid, who.uid, who.gid].map(String)
  const args = [...ids, plan.project, ...plan.roots.flatMap((root, i) => [`share${firstShare + i}`, `${STAGING}/${i}`, root, String(statSync(root).uid)])]
  const result = await sandbox.exec('sh', ['-c', MOUNT_SCRIPT, 'stereos-view', ...args], { user: 'root' })
  if (result.exitCode !== 0) {
    throw new HarnessError(
      'AGENT',
      `laying out the project view in VM ${sandbox.info.id} failed (exit ${result.exitCode}): ${result.stderr.trim() || result.stdout.trim()}`,
      {
        fix: `the guest needs 9p and overlay filesystems (stereOS has both); see ${sandbox.logs.serial}`,
        logs: { serial: sandbox.logs.serial, qemu: sandbox.logs.qemu },
      },
    )
  }
  return who
}

/**
 * The view's reads are cached for the VM's life (9p `cache=loose` does not revalidate). When
 * Vitest reruns files because the host changed (watch mode: the run names `invalidates`), the
 * guest forgets what it cached, so the files tests read natively are read anew.
 */
export async function forgetCachedReads(vm: PoolVm): Promise<void> {
  await vm.exec('sh', ['-c', 'sync; echo 3 > /proc/sys/vm/drop_caches'], { user: 'root' })
}

/** Dirs made in each VM by ensureGuestDir. */
const madeDirs = new WeakMap<PoolVm, Set<string>>()

/**
 * Coverage providers write each worker's results into their own directory and expect it to
 * exist (Vitest made it on the host). Inside the view it does; a `reportsDirectory` outside the
 * project (e.g. in /tmp) is made in the guest, once per VM, owned by the tests' user.
 */
export async function ensureGuestDir(vm: PoolVm, dir: string, who: Identity): Promise<void> {
  const done = madeDirs.get(vm) ?? new Set<string>()
  madeDirs.set(vm, done)
  if (done.has(dir)) return
  const result = await vm.exec('sh', ['-c', 'mkdir -p "$1" && chown "$2:$3" "$1"', 'stereos-dir', dir, String(who.uid), String(who.gid)], { user: 'root' })
  if (result.exitCode !== 0)
    throw new HarnessError('AGENT', `cannot make ${dir} in VM ${vm.info.id}: ${result.stderr.trim()}`, {
      fix: 'set coverage.reportsDirectory to a directory inside the project',
    })
  done.add(dir)
}
