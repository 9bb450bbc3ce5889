import { z } from 'zod'

/** stereosd wire types (STEREOS-FACTS §1.3–1.5): `{"type": …, "payload": …}`, one per line. */

export const LIFECYCLE_STATES = ['booting', 'ready', 'healthy', 'degraded', 'shutdown'] as const
export const LifecycleState = z.enum(LIFECYCLE_STATES)
export type LifecycleState = z.infer<typeof LifecycleState>

export const AgentStatus = z.object({
  name: z.string(),
  running: z.boolean(),
  session: z.string().optional(),
  restarts: z.int(),
  error: z.string().optional(),
})
export type AgentStatus = z.infer<typeof AgentStatus>

export const HealthPayload = z.object({
  // Kept open: a newer stereosd may add states; we only act on the ones we know.
  state: z.string(),
  agents: z.array(AgentStatus).optional(),
  uptime_seconds: z.int(),
})
export type HealthPayload = z.infer<typeof HealthPayload>

export const AckPayload = z.object({
  reply_to: z.string(),
  ok: z.boolean(),
  error: z.string().optional(),
})
export type AckPayload = z.infer<typeof AckPayload>

export const LifecyclePayload = z.object({ state: z.string(), message: z.string().optional() })

/** Every line the guest may send, discriminated by `type`. */
export const GuestMessage = z.discriminatedUnion('type', [
  z.object({ type: z.literal('pong'), payload: z.unknown().optional() }),
  z.object({ type: z.literal('health'), payload: HealthPayload }),
  z.object({ type: z.literal('ack'), payload: AckPayload }),
  z.object({ type: z.literal('lifecycle'), payload: LifecyclePayload }),
])
export type GuestMessage = z.infer<typeof GuestMessage>

export interface ConfigPayload {
  content: string
}
export interface SecretPayload {
  name: string
  value: string
  /** File mode bits as a decimal number; mb always sends 384 (0600). */
  mode?: number
}
export interface SshKeyPayload {
  user: string
  public_key: string
}
export interface MountPayload {
  tag: string
  guest_path: string
  fs_type: '9p' | 'virtiofs'
  read_only?: boolean
}
export interface ShutdownPayload {
  reason?: string
}

/** The host→guest requests and the payload each carries. */
export interface HostRequests {
  ping: undefined
  get_health: undefined
  set_config: ConfigPayload
  inject_secret: SecretPayload
  inject_ssh_key: SshKeyPayload
  mount: MountPayload
  shutdown: ShutdownPayload | undefined
}
export type HostRequestType = keyof HostRequests
