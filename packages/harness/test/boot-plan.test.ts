import { describe, expect, test } from 'vitest'
import { parseSandboxOptions } from '../src/config/options.js'
import { isBootPlan, planBoot, planFromOptions, withHostPorts, withShares } from '../src/config/plan.js'

describe('BootPlan: the options parsed once and resolved', () => {
  test('sizes, arch and QEMU binary are resolved; shared dirs become absolute', () => {
    const plan = planBoot({ arch: 'aarch64', resources: { memory: '1.5GiB' }, shared: [{ host: 'rel/dir', guest: '/data' }] })
    expect(plan).toMatchObject({ arch: 'aarch64', qemuBinary: 'qemu-system-aarch64', memoryMiB: 1536, resources: { memory: 1.5 * 1024 ** 3 } })
    expect(plan.shared).toEqual([{ host: `${process.cwd()}/rel/dir`, guest: '/data', readonly: false }])
    expect(planBoot({ qemuBinary: '/opt/qemu', arch: 'x86_64' }).qemuBinary).toBe('/opt/qemu')
  })

  test('a plan is taken as it is; anything else is parsed, with the same errors as before', () => {
    const plan = planBoot({})
    expect(isBootPlan(plan)).toBe(true)
    expect(planBoot(plan)).toBe(plan)
    // A copy is not a plan: it is input, and its derived keys are not options.
    expect(isBootPlan({ ...plan })).toBe(false)
    expect(() => planBoot({ ...plan } as never)).toThrow(/Invalid sandbox options:[\s\S]*memoryMiB/)
    expect(() => planBoot({ resources: { memory: 'lots' } })).toThrow(/options\.resources\.memory: expected a size like/)
  })

  test('immutable: neither the plan nor the options it was made from can be changed through it', () => {
    const options = parseSandboxOptions({ network: { forwards: [{ host: 8080, guest: 80 }] } })
    const plan = planFromOptions(options)
    expect(() => (plan.network.forwards as unknown[]).push({})).toThrow(TypeError)
    expect(Object.isFrozen(options.network)).toBe(false)
  })

  test('planFromOptions takes only Sandbox options from a schema that extends them', () => {
    const plan = planFromOptions({ ...parseSandboxOptions({}), isolation: 'vm' } as never)
    expect(plan).not.toHaveProperty('isolation')
  })

  test('withHostPorts and withShares derive a new plan, checked as the options are', () => {
    const plan = planBoot({ shared: [{ host: '/a', guest: '/a' }] })
    const ported = withHostPorts(plan, [5432])
    expect(ported.network.hostPorts).toEqual([5432])
    expect(plan.network.hostPorts).toEqual([])
    expect(isBootPlan(ported)).toBe(true)
    expect(() => withHostPorts(planBoot({ network: { mode: 'none' } }), [5432])).toThrow(
      /options\.network\.hostPorts: network\.mode 'none' reaches no host port/,
    )
    expect(() => withHostPorts(plan, [80, 80])).toThrow(/options\.network\.hostPorts: each port at most once/)
    const shared = withShares(plan, [{ host: '/b', guest: '/b', readonly: true }])
    expect(shared.shared.map((s) => s.host)).toEqual(['/a', '/b'])
    expect(plan.shared).toHaveLength(1)
  })
})
