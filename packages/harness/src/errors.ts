/**
 * Every failure the harness reports is a HarnessError: a stable `code` to branch on,
 * a message that names the cause, and a `fix` that tells the user what to do.
 */
export type HarnessErrorCode =
  | 'INVALID_OPTIONS'
  | 'MIXTAPE_NOT_FOUND'
  | 'MIXTAPE_INVALID'
  | 'REGISTRY'
  | 'QEMU_NOT_FOUND'
  | 'QEMU_EXITED'
  | 'BOOT_TIMEOUT'
  | 'CONTROL_PLANE'
  | 'PROTOCOL'
  | 'REQUEST_REJECTED'
  | 'REQUEST_TOO_LARGE'
  | 'QMP'
  | 'TEMPLATE'
  | 'HOST'
  | 'AGENT'
  | 'AGENT_UNREACHABLE'
  | 'AGENT_AUTH'
  | 'CAPTURE'

export interface HarnessErrorDetails {
  /** What the user should do about it, in one sentence. */
  fix?: string
  /** Files worth reading (qemu.log, serial.log, …). */
  logs?: Record<string, string>
  cause?: unknown
}

export class HarnessError extends Error {
  override readonly name: string = 'HarnessError'
  readonly fix: string | undefined
  readonly logs: Record<string, string>

  constructor(
    readonly code: HarnessErrorCode,
    message: string,
    details: HarnessErrorDetails = {},
  ) {
    super(details.fix ? `${message}\nFix: ${details.fix}` : message, { cause: details.cause })
    this.fix = details.fix
    this.logs = details.logs ?? {}
  }
}

/** stereosd answered a request with `ok:false` (or with the wrong reply type). */
export class RequestRejectedError extends HarnessError {
  override readonly name = 'RequestRejectedError'
  constructor(
    readonly request: string,
    readonly guestError: string,
  ) {
    super('REQUEST_REJECTED', `stereosd rejected ${request}: ${guestError}`)
  }
}

export function isHarnessError(err: unknown, code?: HarnessErrorCode): err is HarnessError {
  return err instanceof HarnessError && (code === undefined || err.code === code)
}

/** An error's first message line (a thrown non-Error as text), for one-line logs. */
export function firstLine(err: unknown): string {
  return String((err as Error | undefined)?.message ?? err).split('\n')[0] ?? ''
}
