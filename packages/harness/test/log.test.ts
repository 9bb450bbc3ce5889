import { afterEach, describe, expect, test } from 'vitest'
import { debug, debugSelects } from '../src/log.js'

describe('DEBUG selection', () => {
  test('wildcards, lists and exclusions as in the debug package', () => {
    expect(debugSelects(undefined, 'stereos:boot')).toBe(false)
    expect(debugSelects('', 'stereos:boot')).toBe(false)
    expect(debugSelects('stereos:*', 'stereos:boot')).toBe(true)
    expect(debugSelects('stereos:*', 'stereos:wire')).toBe(true)
    expect(debugSelects('*', 'stereos:wire')).toBe(true)
    expect(debugSelects('stereos:boot', 'stereos:wire')).toBe(false)
    expect(debugSelects('vite:*, stereos:wire', 'stereos:wire')).toBe(true)
    expect(debugSelects('stereos:*,-stereos:wire', 'stereos:wire')).toBe(false)
    expect(debugSelects('stereos:*,-stereos:wire', 'stereos:boot')).toBe(true)
    // Regex characters in a pattern are literal.
    expect(debugSelects('stereos.boot', 'stereosXboot')).toBe(false)
  })
})

describe('debug()', () => {
  const saved = process.env.DEBUG
  afterEach(() => {
    if (saved === undefined) delete process.env.DEBUG
    else process.env.DEBUG = saved
  })

  test('writes namespaced lines only while DEBUG selects the namespace', () => {
    const lines: string[] = []
    const trace = debug('stereos:boot', (text) => lines.push(text))
    delete process.env.DEBUG
    trace('hidden')
    expect(trace.enabled).toBe(false)
    process.env.DEBUG = 'stereos:*'
    expect(trace.enabled).toBe(true)
    trace('phase qemu done')
    process.env.DEBUG = 'stereos:wire'
    trace('hidden again')
    expect(lines).toHaveLength(1)
    expect(lines[0]).toMatch(/^stereos:boot \+\d+ms phase qemu done\n$/)
  })
})
