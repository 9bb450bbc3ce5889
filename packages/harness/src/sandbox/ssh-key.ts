import { generateKeyPairSync, randomBytes } from 'node:crypto'
import { writeFileSync } from 'node:fs'

export interface SshKeyPair {
  /** authorized_keys line as mb sends it: `ssh-ed25519 <base64>\n`, no comment. */
  publicKey: string
  /** Path of the OpenSSH private key (0600), for `ssh -i`. */
  privateKeyPath: string
}

/** A fresh ed25519 key per boot, written as mb writes `<vmdir>/ssh_key` (STEREOS-FACTS §5.5). */
export function writeSshKey(path: string, comment: string): SshKeyPair {
  const { publicKey, privateKey } = generateKeyPairSync('ed25519')
  const pub = publicKey.export({ format: 'jwk' }).x!
  const priv = privateKey.export({ format: 'jwk' }).d!
  const pubRaw = Buffer.from(pub, 'base64url')
  const seed = Buffer.from(priv, 'base64url')
  const blob = sshString('ssh-ed25519', pubRaw)
  writeFileSync(path, opensshPrivateKey(blob, pubRaw, seed, comment), { mode: 0o600 })
  const publicKeyLine = `ssh-ed25519 ${blob.toString('base64')}\n`
  writeFileSync(`${path}.pub`, `ssh-ed25519 ${blob.toString('base64')} ${comment}\n`, { mode: 0o644 })
  return { publicKey: publicKeyLine, privateKeyPath: path }
}

function str(data: string | Buffer): Buffer {
  const bytes = typeof data === 'string' ? Buffer.from(data) : data
  const len = Buffer.alloc(4)
  len.writeUInt32BE(bytes.length)
  return Buffer.concat([len, bytes])
}

function sshString(type: string, key: Buffer): Buffer {
  return Buffer.concat([str(type), str(key)])
}

/** The unencrypted `openssh-key-v1` container (OpenSSH PROTOCOL.key). */
function opensshPrivateKey(publicBlob: Buffer, pub: Buffer, seed: Buffer, comment: string): string {
  const check = randomBytes(4)
  let section = Buffer.concat([check, check, str('ssh-ed25519'), str(pub), str(Buffer.concat([seed, pub])), str(comment)])
  const pad = (8 - (section.length % 8)) % 8
  section = Buffer.concat([section, Buffer.from(Array.from({ length: pad }, (_, i) => i + 1))])
  const count = Buffer.alloc(4)
  count.writeUInt32BE(1)
  const body = Buffer.concat([Buffer.from('openssh-key-v1\0'), str('none'), str('none'), str(''), count, str(publicBlob), str(section)])
  const b64 = body.toString('base64').replace(/.{1,70}/g, '$&\n')
  return `-----BEGIN OPENSSH PRIVATE KEY-----\n${b64}-----END OPENSSH PRIVATE KEY-----\n`
}
