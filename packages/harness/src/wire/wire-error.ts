import { HarnessError } from '../errors.js'

/** The peer sent bytes that break the agent wire protocol; the connection is closed. */
export class WireError extends HarnessError {
  override readonly name = 'WireError'
  constructor(message: string, cause?: unknown) {
    super('PROTOCOL', `agent wire protocol: ${message}`, {
      fix: 'the host and the guest agent must come from the same @stereos/harness version; if they do, report this with the serial.log of the VM',
      cause,
    })
  }
}
