/**
 * The project view's layout in a guest, shared by the Vitest pool (which lays it out), `debug`
 * (which mounts it again over a local checkout) and `doctor` (which checks a mixtape can).
 */

/** Where each view root's overlay (lower, upper, work) lives on the VM's disk. */
export const VIEW_STATE_DIR = '/var/lib/stereos-harness/view'

/** How a view share is mounted as an overlay's lower dir: read-only, page-cached (the host side never changes under a VM). */
export const VIEW_9P_OPTIONS = 'trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144'
