import { PassThrough } from 'node:stream'
import { describe, expect, test } from 'vitest'
import { boundedText } from '../src/sandbox/ssh-bootstrap.js'

describe('what a guest prints over SSH at bootstrap is bounded (#19 bounds)', () => {
  test('the first 64 KiB are kept, the rest is read and dropped', async () => {
    const stream = new PassThrough()
    const text = boundedText(stream)
    stream.write('started\n')
    for (let i = 0; i < 100; i++) stream.write(Buffer.alloc(64 * 1024, 'x'))
    stream.end()
    await new Promise((resolve) => stream.once('end', resolve))
    expect(text().length).toBe(64 * 1024)
    expect(text().startsWith('started\nxxx')).toBe(true)
  })
})
