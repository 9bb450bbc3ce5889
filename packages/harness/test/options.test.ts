import { describe, expect, test } from 'vitest'
import { parseSandboxOptions } from '../src/config/options.js'
import { parseSize } from '../src/config/size.js'

describe('sandbox options', () => {
  test('defaults fill in a boot of the fixture with 1 CPU, 512 MiB, NAT', () => {
    const options = parseSandboxOptions({})
    expect(options).toMatchObject({
      mixtape: 'fixture',
      accel: 'auto',
      resources: { cpus: 1, memory: 512 * 1024 ** 2 },
      network: { mode: 'nat', forwards: [] },
      shared: [],
      secrets: {},
      keepOnFailure: false,
    })
  })

  test('sizes accept jcard spellings and byte counts', () => {
    expect(parseSandboxOptions({ resources: { memory: '1GiB', disk: '20G' } }).resources).toMatchObject({ memory: 1024 ** 3, disk: 20 * 1024 ** 3 })
    expect(parseSize('512MiB')).toBe(512 * 1024 ** 2)
    expect(parseSize('1.5GB')).toBe(1.5e9)
    expect(parseSize(4096)).toBe(4096)
    expect(parseSize('lots')).toBeUndefined()
    expect(parseSize('0')).toBeUndefined()
  })

  test('every invalid option is reported with its full path, and the error says how to fix it', () => {
    const fail = () =>
      parseSandboxOptions({
        resources: { cpus: 0, memory: 'lots' },
        network: { mode: 'bridged', forwards: [{ host: 70000, guest: 22 }] },
        shared: [{ host: '/tmp', guest: 'relative' }],
        secrets: { 'bad/name': 'x' },
        bootTimeout: 5,
      })
    expect(fail).toThrow(
      expect.objectContaining({
        code: 'INVALID_OPTIONS',
        message: expect.stringMatching(
          /options\.resources\.cpus:[\s\S]*options\.resources\.memory: expected a size like "512MiB"[\s\S]*options\.network\.mode[\s\S]*options\.network\.forwards\.0\.host[\s\S]*options\.shared\.0\.guest: must be an absolute guest path[\s\S]*options\.secrets\.bad\/name[\s\S]*bootTimeout[\s\S]*Fix: /,
        ),
      }),
    )
  })
})
