import { describe, expect, test } from 'vitest'
import { plainProgress, ttyProgress, type PullEvent } from '../src/mixtape/oci/progress.js'

const MiB = 1024 ** 2
const digest = `sha256:${'c'.repeat(64)}`
const events: PullEvent[] = [
  { type: 'resolved', ref: 'reg.example/mixtapes/coder:latest', digest, manifest: digest, platform: 'linux/amd64', format: 'raw', tier: 1, warning: undefined },
  { type: 'layer', file: 'stereos.img.zst', digest, size: 64 * MiB, stored: false, resumeFrom: 0 },
  ...[8, 16, 17, 32, 48, 64].map((n): PullEvent => ({ type: 'bytes', file: 'stereos.img.zst', done: n * MiB, size: 64 * MiB })),
  { type: 'layer-done', file: 'stereos.img.zst', size: 64 * MiB, downloaded: 64 * MiB, ms: 1000 },
  { type: 'retry', notice: { what: 'GET x', attempt: 1, attempts: 4, delayMs: 500, reason: 'the registry answered 503' } },
  { type: 'installed', ref: 'reg.example/mixtapes/coder:latest', dir: '/c/mixtapes/coder/latest', downloaded: 64 * MiB, ms: 2000 },
]

describe('pull progress', () => {
  test('plain lines: one per event, a line per quarter of a large blob', () => {
    const lines: string[] = []
    const progress = plainProgress((line) => lines.push(line))
    for (const event of events) progress(event)
    expect(lines).toEqual([
      'pull reg.example/mixtapes/coder:latest: sha256:cccccccccccc → linux/amd64 raw (sha256:cccccccccccc)',
      '  stereos.img.zst 64.0 MiB',
      '  stereos.img.zst 25% (16.0 MiB of 64.0 MiB)',
      '  stereos.img.zst 50% (32.0 MiB of 64.0 MiB)',
      '  stereos.img.zst 75% (48.0 MiB of 64.0 MiB)',
      '  stereos.img.zst done, 64.0 MiB downloaded at 67 MB/s',
      '  retry 2/4 in 500 ms (GET x): the registry answered 503',
      'pulled reg.example/mixtapes/coder:latest into /c/mixtapes/coder/latest (64.0 MiB downloaded in 2.0 s)',
    ])
  })

  test('a terminal gets one redrawn bar per blob, cleared before the next line', () => {
    let out = ''
    const stream = { isTTY: true, columns: 100, write: (s: string) => ((out += s), true) } as unknown as NodeJS.WriteStream
    const progress = ttyProgress(stream)
    for (const event of events) progress(event)
    expect(out).toContain('\r\x1b[K  stereos.img.zst [')
    expect(out).toMatch(/\] 100% 64\.0 MiB\/64\.0 MiB/)
    expect(out).toContain('\r\x1b[K  stereos.img.zst done, 64.0 MiB downloaded')
    expect(out.split('\n').at(-2)).toBe('pulled reg.example/mixtapes/coder:latest into /c/mixtapes/coder/latest (64.0 MiB downloaded in 2.0 s)')
  })
})
