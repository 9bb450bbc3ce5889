import { parse } from 'smol-toml'
import { describe, expect, test } from 'vitest'
import { planBoot } from '../src/config/plan.js'
import { defaultJcard } from '../src/sandbox/jcard.js'

describe('default jcard', () => {
  test('is what mb would write for the sandbox, without secret values', () => {
    const options = planBoot({
      resources: { cpus: 2, memory: '1GiB' },
      shared: [{ host: '/src', guest: '/workspace', readonly: true }],
      network: { forwards: [{ host: 8080, guest: 80 }] },
      secrets: { API_TOKEN: 'do-not-leak' },
    })
    const text = defaultJcard('vm-1', options)
    expect(text).not.toContain('do-not-leak')
    expect(text).not.toContain('secrets')
    expect(parse(text)).toEqual({
      mixtape: 'fixture',
      name: 'vm-1',
      resources: { cpus: 2, memory: '1024MiB', disk: '4096MiB' },
      network: { mode: 'nat', forwards: [{ host: 8080, guest: 80, proto: 'tcp' }] },
      shared: [{ host: '/src', guest: '/workspace', readonly: true }],
    })
  })
})
