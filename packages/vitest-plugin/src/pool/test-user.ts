import { HarnessError } from '@stereos/harness'

/** A guest uid/gid pair. */
export interface Identity {
  uid: number
  gid: number
}

/** `testUser` in the project's options: who the guest's test processes run as. */
export type TestUserChoice = 'unprivileged' | 'root'

/**
 * Where a dedicated test user is numbered: above the range Nix and Debian give normal users
 * (from 1000) and below `nobody` (65534), so no stereOS image has users there.
 */
export const DEDICATED_IDS = { first: 64_000, last: 64_999 } as const

/** The uids and gids the image's /etc/passwd and /etc/group name. */
export interface ImageIds {
  uids: ReadonlySet<number>
  gids: ReadonlySet<number>
}

function ids(table: string, column: number): Set<number> {
  const out = new Set<number>()
  for (const line of table.split('\n')) {
    const field = line.split(':')[column]
    if (field !== undefined && /^\d+$/.test(field)) out.add(Number(field))
  }
  return out
}

export function imageIds(passwd: string, group: string): ImageIds {
  const gids = ids(group, 2)
  for (const gid of ids(passwd, 3)) gids.add(gid)
  return { uids: ids(passwd, 2), gids }
}

/**
 * The guest identity of test processes. `root` only when the config says so. Otherwise the host
 * user's uid/gid, so the view's files belong to the tests as they do on the host, unless that
 * identity means something in the image: root (uid 0), or a uid or gid the image names (on
 * stereOS, 1000 and 1001 are `admin`, who has sudo, and `agent`; a CI runner is often one of
 * them). Those get a dedicated uid/gid the image does not name, and the view is handed to it.
 */
export function chooseTestUser(host: Identity, image: ImageIds, choice: TestUserChoice): Identity {
  if (choice === 'root') return { uid: 0, gid: 0 }
  if (host.uid !== 0 && host.gid !== 0 && !image.uids.has(host.uid) && !image.gids.has(host.gid)) return host
  for (let id = DEDICATED_IDS.first; id <= DEDICATED_IDS.last; id++) {
    if (!image.uids.has(id) && !image.gids.has(id)) return { uid: id, gid: id }
  }
  // A thousand ids all taken is no stereOS image; refusing beats running tests as someone.
  throw new HarnessError(
    'INVALID_OPTIONS',
    `the guest image names every uid/gid from ${DEDICATED_IDS.first} to ${DEDICATED_IDS.last}: no dedicated test user is free`,
    {
      fix: "run Vitest as a host user the image does not name, or set the stereos option `testUser: 'root'`",
    },
  )
}
