import type { Arch } from '../config/options.js'
import type { StereosdClient } from '../control/client.js'
import type { Transport } from '../control/transport.js'
import type { LogSink } from '../log.js'
import type { ControlPlaneInfo } from '../control/plane.js'
import type { Accel } from '../vmm/profile.js'
import type { QemuProcess } from '../vmm/qemu-process.js'
import type { QmpClient } from '../vmm/qmp.js'
import type { GuestAgent } from './agent-start.js'
import type { TemplateUse } from './guest-start.js'
import type { TimelineEntry } from './timeline.js'
import type { SshAccess } from '../vmm/network/ssh-access.js'
import type { CaptureSource } from '../capture/source.js'

/**
 * What a boot hands over (boot.ts builds it, sandbox.ts wraps it in a Sandbox): the types live
 * here so that neither module imports the other's implementation.
 */

export interface SandboxInfo {
  id: string
  arch: Arch
  accel: Accel
  /** Why KVM was not used, when it was not. */
  accelNote: string | undefined
  mixtape: { ref: string; dir: string; version: string | undefined }
  /** How the host reaches stereosd. */
  transport: ControlPlaneInfo
  /** Host ports forwarded to the guest (127.0.0.1 only). */
  ports: { ssh: number | undefined; control: number | undefined; agent: number | undefined }
  /**
   * Unix sockets in the VM dir (0600, dir 0700) that reach the guest when QEMU runs in a private
   * network namespace: then only this user (and root) can connect, and `ports` is empty.
   */
  sockets: { ssh: string | undefined; control: string | undefined; agent: string | undefined }
  vmDir: string
  pid: number
  /** When each boot phase finished, in ms since Sandbox.boot was called. */
  timeline: TimelineEntry[]
  /** The template this VM was restored from (`built`: this boot saved it; `agent`: its agent was running in it); undefined for a cold boot. */
  template: TemplateUse | undefined
}

export interface SandboxLogs {
  /** QEMU's own stdout/stderr, appended across boots. */
  qemu: string
  /** The guest's serial console. */
  serial: string
}

export type { SshAccess } from '../vmm/network/ssh-access.js'

export interface SandboxParts {
  info: SandboxInfo
  logs: SandboxLogs
  ssh: SshAccess | undefined
  control: StereosdClient
  transport: Transport
  /** The guest agent, unless booted with bootstrap 'none'. */
  agent: GuestAgent | undefined
  qemu: QemuProcess
  qmp: () => Promise<QmpClient>
  keepOnFailure: boolean
  /** QEMU was started to be able to outlive this process (Sandbox.detach). */
  detachable: boolean
  log: LogSink
  /** What Sandbox.capture needs (capture/save.ts). */
  capture: CaptureSource
}
