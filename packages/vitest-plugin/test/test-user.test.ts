import { describe, expect, test } from 'vitest'
import { chooseTestUser, DEDICATED_IDS, imageIds } from '../src/pool/test-user.js'

// stereOS's users (modules/base.nix): admin has sudo, agent is the restricted login.
const PASSWD = 'root:x:0:0:root:/root:/bin/sh\nadmin:x:1000:1000:admin:/home/admin:/bin/sh\nagent:x:1001:1001:agent:/workspace:/bin/sh\n'
const GROUP = 'root:x:0:\nwheel:x:1:admin\nusers:x:100:\nadmin:x:1000:admin\nagent:x:1001:\n'
const stereos = imageIds(PASSWD, GROUP)
const dedicated = { uid: DEDICATED_IDS.first, gid: DEDICATED_IDS.first }

describe('imageIds', () => {
  test('takes uids from passwd and gids from group and from passwd primary groups', () => {
    const ids = imageIds('svc:x:5:77::/:/bin/false\n#comment\n\nbroken\n', 'g:x:9:\n')
    expect([...ids.uids]).toEqual([5])
    expect([...ids.gids].sort()).toEqual([77, 9].sort())
  })
})

describe('chooseTestUser', () => {
  test('a host user the image does not name runs as itself', () => {
    expect(chooseTestUser({ uid: 1500, gid: 1500 }, stereos, 'unprivileged')).toEqual({ uid: 1500, gid: 1500 })
  })

  test('a root host user gets the dedicated user, not root', () => {
    expect(chooseTestUser({ uid: 0, gid: 0 }, stereos, 'unprivileged')).toEqual(dedicated)
  })

  test("a host uid that is the image's admin (sudo) or agent gets the dedicated user", () => {
    expect(chooseTestUser({ uid: 1000, gid: 1000 }, stereos, 'unprivileged')).toEqual(dedicated)
    expect(chooseTestUser({ uid: 1001, gid: 4242 }, stereos, 'unprivileged')).toEqual(dedicated)
  })

  test("a host gid that is one of the image's groups (wheel, admin) gets the dedicated user", () => {
    expect(chooseTestUser({ uid: 1500, gid: 1 }, stereos, 'unprivileged')).toEqual(dedicated)
    expect(chooseTestUser({ uid: 1500, gid: 0 }, stereos, 'unprivileged')).toEqual(dedicated)
  })

  test('the dedicated ids skip what the image names', () => {
    const taken = imageIds(`${PASSWD}x:x:${DEDICATED_IDS.first}:5::/:/bin/false\n`, `${GROUP}y:x:${DEDICATED_IDS.first + 1}:\n`)
    expect(chooseTestUser({ uid: 0, gid: 0 }, taken, 'unprivileged')).toEqual({ uid: DEDICATED_IDS.first + 2, gid: DEDICATED_IDS.first + 2 })
  })

  test('root only when the config asks for it', () => {
    expect(chooseTestUser({ uid: 1500, gid: 1500 }, stereos, 'root')).toEqual({ uid: 0, gid: 0 })
  })

  test('an image naming every dedicated id is refused with a fix', () => {
    const all = Array.from({ length: DEDICATED_IDS.last - DEDICATED_IDS.first + 1 }, (_, i) => `u${i}:x:${DEDICATED_IDS.first + i}:0::/:/x`).join('\n')
    expect(() => chooseTestUser({ uid: 0, gid: 0 }, imageIds(all, ''), 'unprivileged')).toThrow(/no dedicated test user is free.*/)
  })
})
