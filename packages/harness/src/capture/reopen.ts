import { existsSync, realpathSync, statSync } from 'node:fs'
import { isAbsolute, join, relative, resolve, sep } from 'node:path'
import { z } from 'zod'
import { VIEW_9P_OPTIONS, VIEW_STATE_DIR } from '../view.js'

const GuestPath = z.string().regex(/^\/[^\0\n]*$/, 'an absolute guest path')

/**
 * What the Vitest pool writes into a capture's `context` (beside `file` and `failedTests`) so
 * `debug` can lay the local checkout where the project view was and rerun the file. Read back
 * with this schema: a capture is a downloaded file, so nothing in it is trusted on the host.
 */
export const PoolCaptureContext = z.object({
  /** The failing test file, relative to `root`. */
  file: z.string().min(1),
  failedTests: z.array(z.string()),
  /** The view root that held the project when the capture was taken (a CI path): the local checkout stands in for it. */
  checkout: GuestPath,
  /** Vitest's root (at or under `checkout`): the rerun's root and working directory. */
  root: GuestPath,
  /** Each view root: the QEMU share tag it was served under and its path (host and guest alike). */
  view: z.array(z.object({ tag: z.string().regex(/^[A-Za-z0-9_-]+$/), root: GuestPath })),
  /** The guest test user: the debug shell and the rerun run as it. */
  testUser: z.object({ uid: z.int().nonnegative(), gid: z.int().nonnegative() }),
  /** HOME of the test processes. */
  home: GuestPath,
  /** The guest Node the worker ran on. */
  node: GuestPath,
  /** Vitest's package dir (its `vitest.mjs`) and version. */
  vitest: z.object({ dir: GuestPath, version: z.string() }),
})
export type PoolCaptureContext = z.infer<typeof PoolCaptureContext>

/** The pool's context of a capture, or undefined for a capture made otherwise (Sandbox.capture from code). */
export function poolContextOf(context: Record<string, unknown>): PoolCaptureContext | undefined {
  if (!('view' in context)) return undefined
  const parsed = PoolCaptureContext.safeParse(context)
  return parsed.success ? parsed.data : undefined
}

export interface ViewSource {
  tag: string
  /** The guest path (the CI path). */
  root: string
  /** The local directory served in its place, or undefined (served empty). */
  local: string | undefined
  /** Why it is served empty. */
  why?: string
}

/**
 * Which local directory stands in for each view root: a root at or under the CI checkout is
 * the same relative path under the local checkout. A root outside the checkout (a global
 * node_modules), or one missing locally, is served empty, with why. Nothing outside the local
 * checkout is ever served: a path in the capture cannot name one.
 */
export function viewSources(context: PoolCaptureContext, checkout: string): ViewSource[] {
  const local = realpathSync(checkout)
  return context.view.map(({ tag, root }) => {
    const rel = relative(context.checkout, root)
    if (rel.startsWith('..') || isAbsolute(rel)) return { tag, root, local: undefined, why: `${root} is outside the captured checkout ${context.checkout}` }
    const candidate = resolve(local, rel)
    if (!existsSync(candidate) || !statSync(candidate).isDirectory()) return { tag, root, local: undefined, why: `${candidate} is not a directory here` }
    const real = realpathSync(candidate)
    if (real !== local && !real.startsWith(`${local}${sep}`)) return { tag, root, local: undefined, why: `${candidate} leads outside ${local}` }
    return { tag, root, local: real }
  })
}

/**
 * Runs as root in the restored guest: mount each view share again (the capture's scrub took the
 * 9p mounts down: QEMU cannot migrate with one mounted) and put its overlay back at the CI path,
 * on the upper dir the VM wrote into, so the VM's own writes stay on top of the local checkout.
 * Arguments: (tag index root) per view root.
 */
export const REMOUNT_VIEW_SCRIPT = `set -eu
V=${VIEW_STATE_DIR}
while [ $# -ge 3 ]; do
  tag=$1 i=$2 root=$3
  shift 3
  umount "$root" 2>/dev/null || true
  # stereosd mounts every share it is given (at the capture's staging path): a tag mounts once.
  for m in $(awk -v t="$tag" '$1==t && $3=="9p"{print $2}' /proc/mounts); do umount "$m"; done
  mkdir -p "$V/$i/lower" "$V/$i/upper" "$V/$i/work" "$root"
  mount -t 9p -o ${VIEW_9P_OPTIONS} "$tag" "$V/$i/lower"
  dirs="lowerdir=$V/$i/lower,upperdir=$V/$i/upper,workdir=$V/$i/work"
  mount -t overlay stereos-view -o "$dirs,metacopy=on" "$root" 2>/dev/null || mount -t overlay stereos-view -o "$dirs" "$root"
done
`

/** The script's arguments: the view roots in the pool's order (their index names their overlay dirs). */
export function remountArgs(context: PoolCaptureContext): string[] {
  return context.view.flatMap(({ tag, root }, i) => [tag, String(i), root])
}

/** The command line of `debug --rerun`: Vitest itself, in the guest, on the failing file, with forks and the inspector. */
export function rerunArgs(context: PoolCaptureContext, inspect: { brk: boolean; port: number }): string[] {
  return [
    join(context.vitest.dir, 'vitest.mjs'),
    'run',
    context.file,
    '--root',
    context.root,
    '--pool=forks',
    '--no-file-parallelism',
    `--${inspect.brk ? 'inspect-brk' : 'inspect'}=127.0.0.1:${inspect.port}`,
  ]
}
