import type { Arch } from '../config/options.js'

/** The guest architecture that matches this host, or undefined on hosts we cannot emulate natively. */
export function hostArch(): Arch | undefined {
  if (process.arch === 'x64') return 'x86_64'
  if (process.arch === 'arm64') return 'aarch64'
  return undefined
}
