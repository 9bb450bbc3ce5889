import { describe, expect, test } from 'vitest'
import { OPS } from '../src/wire/messages.js'
import { WireError } from '../src/wire/wire-error.js'

const spawnArgs = (extra: Record<string, unknown>) => OPS.spawn.args({ ref: 1, cmd: 'node', args: [], ...extra }, 'spawn arguments')

/** The identity, privilege and sweep fields of the agent's ops, as both ends check them. */
describe('wire ops: spawn identity, renice, sweep', () => {
  test("spawn's user is a guest user name or a numeric uid/gid; noNewPrivs and nice pass through", () => {
    expect(spawnArgs({ user: 'root' }).user).toBe('root')
    expect(spawnArgs({ user: 'agent' }).user).toBe('agent')
    expect(spawnArgs({ user: { uid: 1000, gid: 100, extra: 'dropped' }, noNewPrivs: true, nice: 19 })).toEqual({
      ref: 1,
      cmd: 'node',
      args: [],
      user: { uid: 1000, gid: 100 },
      noNewPrivs: true,
      nice: 19,
    })
    expect(spawnArgs({ nice: -20 }).nice).toBe(-20)
    expect(spawnArgs({})).toEqual({ ref: 1, cmd: 'node', args: [] })
  })

  test('uid 0 by number is refused (root is asked for by name); gid 0 is a group like any other', () => {
    expect(() => spawnArgs({ user: { uid: 0, gid: 0 } })).toThrow(/spawn arguments\.user\.uid: uid 0 is refused here/)
    expect(() => spawnArgs({ user: { uid: 0, gid: 0 } })).toThrow(WireError)
    expect(spawnArgs({ user: { uid: 1, gid: 0 } }).user).toEqual({ uid: 1, gid: 0 })
  })

  test('malformed identities, flags and nice values are refused', () => {
    expect(() => spawnArgs({ user: 'admin' })).toThrow(/user: expected one of agent, root/)
    expect(() => spawnArgs({ user: { uid: 1000 } })).toThrow(/user\.gid: expected a non-negative integer/)
    expect(() => spawnArgs({ user: { uid: -1, gid: 1 } })).toThrow(/user\.uid: expected a non-negative integer/)
    expect(() => spawnArgs({ user: { uid: 1.5, gid: 1 } })).toThrow(/user\.uid/)
    expect(() => spawnArgs({ user: [1000, 1000] })).toThrow(/user: expected an object, got array/)
    expect(() => spawnArgs({ noNewPrivs: 'yes' })).toThrow(/noNewPrivs: expected a boolean/)
    for (const nice of [20, -21, 0.5, '19', Number.NaN]) expect(() => spawnArgs({ nice })).toThrow(/nice: expected an integer nice value from -20 to 19/)
  })

  test('renice names a process ref and a nice value', () => {
    expect(OPS.renice.args({ ref: 3, nice: 0 }, 'renice arguments')).toEqual({ ref: 3, nice: 0 })
    expect(() => OPS.renice.args({ ref: 3, nice: 40 }, 'renice arguments')).toThrow(/renice arguments\.nice/)
    expect(() => OPS.renice.args({ nice: 0 }, 'renice arguments')).toThrow(/renice arguments\.ref/)
  })

  test('sweep takes a non-root uid and, optionally, the pid to keep; it answers with the pids it killed', () => {
    expect(OPS.sweep.args({ uid: 1000, keep: 42 }, 'sweep arguments')).toEqual({ uid: 1000, keep: 42 })
    expect(() => OPS.sweep.args({ uid: 0, keep: 42 }, 'sweep arguments')).toThrow(/sweep arguments\.uid: uid 0 is refused/)
    expect(OPS.sweep.args({ uid: 1000 }, 'sweep arguments')).toEqual({ uid: 1000 })
    expect(() => OPS.sweep.args({ uid: 1000, keep: -1 }, 'sweep arguments')).toThrow(/sweep arguments\.keep/)
    expect(OPS.sweep.result({ killed: [7, 9] }, 'sweep result')).toEqual({ killed: [7, 9] })
    expect(() => OPS.sweep.result({ killed: ['7'] }, 'sweep result')).toThrow(/sweep result\.killed\[0\]/)
  })

  test("spawn's worker flag is a boolean; sweepWorkers takes, optionally, the pid whose cgroup to keep (no uid: root's workers too)", () => {
    expect(spawnArgs({ user: 'root', worker: true })).toEqual({ ref: 1, cmd: 'node', args: [], user: 'root', worker: true })
    expect(() => spawnArgs({ worker: 1 })).toThrow(/spawn arguments\.worker: expected a boolean/)
    expect(OPS.sweepWorkers.args({ keep: 42, uid: 0 }, 'sweepWorkers arguments')).toEqual({ keep: 42 })
    expect(OPS.sweepWorkers.args({}, 'sweepWorkers arguments')).toEqual({})
    expect(() => OPS.sweepWorkers.args({ keep: -1 }, 'sweepWorkers arguments')).toThrow(/sweepWorkers arguments\.keep/)
    expect(OPS.sweepWorkers.result({ killed: [7] }, 'sweepWorkers result')).toEqual({ killed: [7] })
  })
})
