import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, test } from 'vitest'
import { writeSshKey } from '../src/sandbox/ssh-key.js'

describe('per-VM SSH key', () => {
  test('OpenSSH reads the private key and derives the public key we inject', () => {
    const path = join(mkdtempSync(join(tmpdir(), 'sh-key-')), 'ssh_key')
    const key = writeSshKey(path, 'stereos-test')
    expect(key.publicKey).toMatch(/^ssh-ed25519 [A-Za-z0-9+/]+=*\n$/)
    expect(statSync(path).mode & 0o777).toBe(0o600)
    // ssh-keygen -y parses the openssh-key-v1 container and prints the public half.
    const derived = execFileSync('ssh-keygen', ['-y', '-f', path], { encoding: 'utf8' })
    expect(derived.split(' ').slice(0, 2).join(' ')).toBe(key.publicKey.trim())
    expect(readFileSync(`${path}.pub`, 'utf8')).toBe(`${key.publicKey.trim()} stereos-test\n`)
  })
})
