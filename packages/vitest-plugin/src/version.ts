import { HarnessError } from '@stereos/harness'

/** The Vitest majors whose pool and worker APIs this pool was built and tested against. */
export const SUPPORTED = '^4.1.0 || ^5.0.0'

export function checkVitestVersion(version: string): void {
  const m = /^(\d+)\.(\d+)\./.exec(version)
  const major = m ? Number(m[1]) : NaN
  const minor = m ? Number(m[2]) : NaN
  if (major === 5 || (major === 4 && minor >= 1)) return
  throw new HarnessError('HOST', `@stereos/vitest-plugin supports Vitest ${SUPPORTED}; this is Vitest ${version}`, {
    fix:
      major < 4 || (major === 4 && minor < 1)
        ? 'upgrade vitest to 4.1 or 5.x (the custom pool API this needs appeared in 4.1)'
        : 'use a @stereos/vitest-plugin release that supports this Vitest major',
  })
}

/** The major of a supported Vitest version (checkVitestVersion has let it through). */
export function vitestMajor(version: string): 4 | 5 {
  return version.startsWith('4.') ? 4 : 5
}
