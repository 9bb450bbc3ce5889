import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  truncateSync,
  writeFileSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import type { AgentClient } from '../src/agent-client/client.js'
import { DEFAULT_READ_FILE_MAX_BYTES } from '../src/agent-client/files.js'
import { isHarnessError } from '../src/errors.js'
import type { ListEntry } from '../src/wire/messages.js'
import type { WirePeer } from '../src/wire/peer.js'
import { forgedAgent, type ForgedAgent, type ForgedHandlers } from './support/forged-agent.js'
import { startLocalAgent, type LocalAgent } from './support/local-agent.js'

/**
 * Issue 14 items 6 and 7: what a guest (or a forged agent) can make the host do through copyOut
 * and readFile. The real agent runs as a host process (its "guest" paths are host paths); forged
 * agents speak the real wire protocol with scripted lies.
 */

const temps: string[] = []
const temp = (prefix: string) => {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  temps.push(dir)
  return dir
}
const forged: ForgedAgent[] = []
afterAll(async () => {
  for (const agent of forged) await agent.close()
  for (const dir of temps) rmSync(dir, { recursive: true, force: true })
})

async function rejection(promise: Promise<unknown>): Promise<Error> {
  return promise.then(
    () => {
      throw new Error('expected a refusal')
    },
    (err: unknown) => err as Error,
  )
}

/** A forged agent whose guest dir lists `entries`; every file read sends `content`. */
async function lyingLister(entries: ListEntry[], content = Buffer.from('ssh-ed25519 AAAA attacker\n')): Promise<AgentClient> {
  const handlers: ForgedHandlers = {
    stat: async () => ({ stat: { kind: 'dir', size: 0, mode: 0o755, mtimeMs: 0 } }),
    list: async () => ({ entries }),
    read: async (args, peer: WirePeer) => {
      peer.channel(args.channel as number).end(content)
      return { size: content.length, mode: 0o644 }
    },
  }
  const agent = await forgedAgent(handlers)
  forged.push(agent)
  return agent.connect()
}

const entry = (path: string, kind: ListEntry['kind'], extra: Partial<ListEntry> = {}): ListEntry => ({
  path,
  kind,
  mode: kind === 'dir' ? 0o755 : 0o644,
  size: 0,
  ...extra,
})

describe('copyOut never writes outside its destination (#14.6)', () => {
  test('a forged listing of a symlink and a file under it, in one call: refused, nothing written outside', async () => {
    const outside = temp('sh-victim-')
    const dest = join(temp('sh-dest-'), 'out')
    const client = await lyingLister([entry('a', 'symlink', { target: outside }), entry('a/authorized_keys', 'file', { size: 26 })])
    const err = await rejection(client.copyOut('/results', dest))
    expect(isHarnessError(err, 'PROTOCOL')).toBe(true)
    expect(err.message).toContain('listed a/authorized_keys, but its parent a is a symlink, not a directory')
    expect(readdirSync(outside)).toEqual([])
    client.close()
  })

  test.each([
    [
      'the same path twice (symlink, then file)',
      [entry('k', 'symlink', { target: '/etc/passwd' }), entry('k', 'file')],
      /listed k twice \(as symlink and file\)/,
    ],
    ['a .. component', [entry('../escape', 'file')], /listed "\.\.\/escape", which is not a plain relative path/],
    ['an absolute path', [entry('/etc/cron.d/x', 'file')], /not a plain relative path/],
    ['a file under a dir that was never listed', [entry('d/x', 'file')], /its parent d is not listed before it/],
  ])('a forged listing with %s is refused before anything is written', async (_name, entries, message) => {
    const dest = join(temp('sh-dest-'), 'out')
    const client = await lyingLister(entries)
    const err = await rejection(client.copyOut('/results', dest))
    expect(isHarnessError(err, 'PROTOCOL')).toBe(true)
    expect(err.message).toMatch(message)
    expect(existsSync(dest)).toBe(false)
    client.close()
  })

  describe('with the real agent', () => {
    let agent: LocalAgent
    let client: AgentClient
    beforeAll(async () => {
      agent = await startLocalAgent()
      client = await agent.connect()
    })
    afterAll(async () => {
      client?.close()
      await agent?.stop()
    })

    test('a link copied out first, then a second copy with a file under that name: refused, the link target untouched', async () => {
      const outside = temp('sh-victim-')
      const guest = temp('sh-guest-')
      mkdirSync(join(guest, 'first'))
      symlinkSync(outside, join(guest, 'first', 'a'))
      mkdirSync(join(guest, 'second', 'a'), { recursive: true })
      writeFileSync(join(guest, 'second', 'a', 'authorized_keys'), 'ssh-ed25519 AAAA attacker\n')
      const dest = temp('sh-dest-')
      await client.copyOut(join(guest, 'first'), dest)
      expect(lstatSync(join(dest, 'a')).isSymbolicLink()).toBe(true)
      const err = await rejection(client.copyOut(join(guest, 'second'), dest))
      expect(err.message).toMatch(/exists on the host as a symlink, where the guest has a directory|is not a plain directory/)
      expect(readdirSync(outside)).toEqual([])
    })

    test("a symlink already at a file's path is replaced, not followed", async () => {
      const outside = temp('sh-victim-')
      writeFileSync(join(outside, 'bashrc'), 'original\n')
      const guest = temp('sh-guest-')
      writeFileSync(join(guest, 'f'), 'from the guest\n')
      const dest = temp('sh-dest-')
      symlinkSync(join(outside, 'bashrc'), join(dest, 'f'))
      await client.copyOut(guest, dest)
      expect(lstatSync(join(dest, 'f')).isFile()).toBe(true)
      expect(readFileSync(join(dest, 'f'), 'utf8')).toBe('from the guest\n')
      expect(readFileSync(join(outside, 'bashrc'), 'utf8')).toBe('original\n')
      // The single-file form too.
      symlinkSync(join(outside, 'bashrc'), join(dest, 'g'))
      await client.copyOut(join(guest, 'f'), join(dest, 'g'))
      expect(readFileSync(join(outside, 'bashrc'), 'utf8')).toBe('original\n')
      expect(lstatSync(join(dest, 'g')).isFile()).toBe(true)
    })

    test('setuid and setgid bits do not reach the host', async () => {
      const guest = temp('sh-guest-')
      writeFileSync(join(guest, 'suid'), '#!/bin/sh\n')
      chmodSync(join(guest, 'suid'), 0o6755)
      const dest = temp('sh-dest-')
      await client.copyOut(guest, dest)
      expect(statSync(join(dest, 'suid')).mode & 0o7777).toBe(0o755)
    })
  })
})

describe('readFile is bounded (#14.7)', () => {
  let agent: LocalAgent
  let client: AgentClient
  beforeAll(async () => {
    agent = await startLocalAgent()
    client = await agent.connect()
  })
  afterAll(async () => {
    client?.close()
    await agent?.stop()
  })

  test('a 1.5 GiB sparse file is refused from its announced size, naming size, cap and option', async () => {
    const path = join(temp('sh-guest-'), 'sparse')
    writeFileSync(path, '')
    truncateSync(path, 1.5 * 1024 ** 3)
    const err = await rejection(client.readFile(path))
    expect(isHarnessError(err, 'AGENT')).toBe(true)
    expect(err.message).toContain(`${path} is 1610612736 bytes, over the readFile limit of ${DEFAULT_READ_FILE_MAX_BYTES} bytes (maxBytes)`)
    expect(err.message).toContain('copyOut')
  })

  test('maxBytes is the exact bound; a file at it is read', async () => {
    const path = join(temp('sh-guest-'), 'eleven')
    writeFileSync(path, 'eleven byte')
    expect(await rejection(client.readFile(path, { maxBytes: 10 }))).toMatchObject({
      message: expect.stringContaining('is 11 bytes, over the readFile limit of 10 bytes'),
    })
    expect((await client.readFile(path, { maxBytes: 11 })).toString()).toBe('eleven byte')
    expect(await rejection(client.readFile(path, { maxBytes: -1 }))).toMatchObject({ code: 'INVALID_OPTIONS' })
  })

  test('a forged agent that announces a small file and streams more is cut off at maxBytes', async () => {
    const flood = Buffer.alloc(8 * 1024 * 1024, 0x41)
    const fake = await forgedAgent({
      stat: async () => ({ stat: { kind: 'file', size: 10, mode: 0o644, mtimeMs: 0 } }),
      read: async (args, peer) => {
        const channel = peer.channel(args.channel as number)
        channel.on('error', () => undefined)
        channel.end(flood)
        return { size: 10, mode: 0o644 }
      },
    })
    forged.push(fake)
    const liar = await fake.connect()
    const err = await rejection(liar.readFile('/etc/motd', { maxBytes: 1024 }))
    expect(isHarnessError(err, 'AGENT')).toBe(true)
    expect(err.message).toMatch(/\/etc\/motd is at least \d+ bytes, over the readFile limit of 1024 bytes \(maxBytes\)/)
    liar.close()
  })

  test('a forged agent whose stat says small but whose read announces more is refused at the announcement', async () => {
    const fake = await forgedAgent({
      stat: async () => ({ stat: { kind: 'file', size: 10, mode: 0o644, mtimeMs: 0 } }),
      read: async () => ({ size: 2 ** 40, mode: 0o644 }),
    })
    forged.push(fake)
    const liar = await fake.connect()
    const err = await rejection(liar.readFile('/var/log/huge'))
    expect(err.message).toContain(`/var/log/huge is ${2 ** 40} bytes, over the readFile limit`)
    liar.close()
  })
})
