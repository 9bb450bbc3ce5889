/**
 * Validation for wire messages. Not zod, on purpose: this code runs inside the guest from the
 * harness share, which carries no node_modules, and it checks a handful of flat shapes.
 * Config (user input) stays zod; messages from the peer go through these checks on both ends.
 */
import { WireError } from './wire-error.js'

export type Check<T> = (value: unknown, path: string) => T

function bad(path: string, expected: string, value: unknown): never {
  const got = value === null ? 'null' : Array.isArray(value) ? 'array' : typeof value
  throw new WireError(`${path}: expected ${expected}, got ${got}`)
}

export const str: Check<string> = (v, p) => (typeof v === 'string' ? v : bad(p, 'a string', v))
export const bool: Check<boolean> = (v, p) => (typeof v === 'boolean' ? v : bad(p, 'a boolean', v))
export const num: Check<number> = (v, p) => (typeof v === 'number' && Number.isFinite(v) ? v : bad(p, 'a number', v))
export const uint: Check<number> = (v, p) => (Number.isSafeInteger(v) && (v as number) >= 0 ? (v as number) : bad(p, 'a non-negative integer', v))

export function literal<const T extends string>(...options: T[]): Check<T> {
  return (v, p) => (options.includes(v as T) ? (v as T) : bad(p, `one of ${options.join(', ')}`, v))
}

export function optional<T>(check: Check<T>): Check<T | undefined> {
  return (v, p) => (v === undefined || v === null ? undefined : check(v, p))
}

export function nullable<T>(check: Check<T>): Check<T | null> {
  return (v, p) => (v === null ? null : check(v, p))
}

export function arrayOf<T>(check: Check<T>, max = 1_000_000): Check<T[]> {
  return (v, p) => {
    if (!Array.isArray(v)) return bad(p, 'an array', v)
    if (v.length > max) throw new WireError(`${p}: more than ${max} entries`)
    return v.map((item, i) => check(item, `${p}[${i}]`))
  }
}

export function recordOf<T>(check: Check<T>): Check<Record<string, T>> {
  return (v, p) => {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) return bad(p, 'an object', v)
    const out: Record<string, T> = {}
    for (const [key, item] of Object.entries(v)) out[key] = check(item, `${p}.${key}`)
    return out
  }
}

type Shape = Record<string, Check<unknown>>
export type Infer<S extends Shape> = { [K in keyof S as undefined extends ReturnType<S[K]> ? never : K]: ReturnType<S[K]> } & {
  [K in keyof S as undefined extends ReturnType<S[K]> ? K : never]?: ReturnType<S[K]>
}

/** An object with exactly these fields checked (others are dropped). */
export function object<S extends Shape>(shape: S): Check<Infer<S>> {
  return (v, p) => {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) return bad(p, 'an object', v)
    const out: Record<string, unknown> = {}
    for (const [key, check] of Object.entries(shape)) {
      const item = check((v as Record<string, unknown>)[key], `${p}.${key}`)
      if (item !== undefined) out[key] = item
    }
    return out as Infer<S>
  }
}
