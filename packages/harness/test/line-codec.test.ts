import { randomBytes } from 'node:crypto'
import { describe, expect, test } from 'vitest'
import { LineDecoder } from '../src/control/line-codec.js'

describe('LineDecoder', () => {
  test('splits lines across arbitrary chunk boundaries and skips empty lines', () => {
    const text = Buffer.from('{"a":1}\n\n\r\n{"b":"é"}\n{"c":')
    for (let split = 0; split <= text.length; split++) {
      const decoder = new LineDecoder(64)
      const events = [...decoder.push(text.subarray(0, split)), ...decoder.push(text.subarray(split))]
      expect(events).toEqual([{ line: '{"a":1}' }, { line: '{"b":"é"}' }])
    }
  })

  test('reports an oversized line once, with its size, and resumes at the next line', () => {
    const decoder = new LineDecoder(16)
    const events = [...decoder.push(Buffer.from('x'.repeat(10))), ...decoder.push(Buffer.from('y'.repeat(20))), ...decoder.push(Buffer.from('\nok\n'))]
    expect(events).toEqual([{ oversized: 30 }, { line: 'ok' }])
  })

  test('random, truncated and oversized input never throws and never holds more than the limit', () => {
    const limit = 1024
    const decoder = new LineDecoder(limit)
    for (let i = 0; i < 2_000; i++) {
      const chunk = randomBytes(1 + Math.floor(Math.random() * 3 * limit))
      if (i % 7 === 0) chunk.fill(0x0a, 0, 1)
      for (const event of decoder.push(chunk)) {
        // Invalid UTF-8 decodes to one U+FFFD per byte, so a line's length never exceeds its bytes.
        if ('line' in event) expect(event.line.length).toBeLessThanOrEqual(limit)
        else expect(event.oversized).toBeGreaterThan(limit)
      }
      // The decoder's own buffer is bounded by the limit.
      expect((decoder as unknown as { size: number }).size).toBeLessThanOrEqual(limit)
    }
  })
})
