import { createReadStream } from 'node:fs'
import zlib from 'node:zlib'
import type { Readable } from 'node:stream'

/** Secrets shorter than this are not searched for: they would match by chance. */
export const MIN_NEEDLE_CHARS = 8

/**
 * Each value as the bytes it may be stored as: UTF-8 (Latin-1 for what is ASCII: Go, V8's
 * one-byte strings, files) and UTF-16LE (V8's two-byte strings).
 */
export function needleBytes(values: readonly string[]): Buffer[] {
  const out: Buffer[] = []
  for (const value of new Set(values)) {
    if (value.length < MIN_NEEDLE_CHARS) continue
    out.push(Buffer.from(value, 'utf8'), Buffer.from(value, 'utf16le'))
  }
  return out
}

/** Whether any needle occurs in the stream (across chunk boundaries too). */
export async function streamHolds(stream: Readable, needles: readonly Buffer[]): Promise<boolean> {
  if (needles.length === 0) {
    stream.destroy()
    return false
  }
  const keep = Math.max(...needles.map((n) => n.length)) - 1
  let tail = Buffer.alloc(0)
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      const window = tail.length ? Buffer.concat([tail, chunk]) : chunk
      if (needles.some((needle) => window.includes(needle))) return true
      tail = Buffer.from(window.subarray(Math.max(0, window.length - keep)))
    }
  } finally {
    stream.destroy()
  }
  return false
}

export function fileHolds(path: string, needles: readonly Buffer[]): Promise<boolean> {
  return streamHolds(createReadStream(path, { highWaterMark: 4 * 1024 * 1024 }), needles)
}

/** A zstd file, decompressed as it is read. */
export function zstdFileHolds(path: string, needles: readonly Buffer[]): Promise<boolean> {
  const source = createReadStream(path, { highWaterMark: 4 * 1024 * 1024 })
  const decompressed = source.pipe(zlib.createZstdDecompress({ chunkSize: 4 * 1024 * 1024 }))
  source.on('error', (err) => decompressed.destroy(err))
  return streamHolds(decompressed, needles)
}

/** `text` with every needle value replaced (logs keep their lines, not the values). */
export function redact(text: Buffer, values: readonly string[]): Buffer {
  let out = text.toString('utf8')
  for (const value of values) if (value.length >= MIN_NEEDLE_CHARS) out = out.split(value).join('[redacted]')
  return Buffer.from(out, 'utf8')
}
