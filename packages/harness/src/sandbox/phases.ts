import type { Debug } from '../log.js'
import { Rollback } from './rollback.js'
import { Timeline } from './timeline.js'

/**
 * The phases of a boot, in the order they start. A cold boot, a template restore and the
 * restore of a capture run the same list: 'template-save' only where this boot saves the VM
 * template first, 'resume' only where QEMU loads a saved state ('disk' then lays out the
 * template's or the capture's disk instead of a fresh overlay). Provisioning, the clock refresh
 * of a restored guest and the agent's start overlap.
 */
export const BOOT_PHASES = [
  'mixtape',
  'accel',
  'harness-share',
  'share-image',
  'control-plane',
  'vm-dir',
  'network',
  'template-save',
  'disk',
  'qemu',
  'resume',
  'stereosd',
  'provision',
  'refresh',
  'agent',
  'ssh',
  'host-name',
] as const
export type BootPhase = (typeof BOOT_PHASES)[number]

/** Registers how to undo what a phase made; `failure` is the error that failed the boot. */
export type Undo = (undo: (failure: unknown) => PromiseLike<void> | void) => void

/**
 * One boot's phases: each named phase is traced and timed (DEBUG=stereos:boot; `mark` adds the
 * public SandboxInfo.timeline entry) and registers its undo on the boot's one stack, under its
 * own name. A failing phase undoes every phase before it, newest first.
 */
export class BootPhases {
  readonly timeline: Timeline

  private constructor(
    trace: Debug | undefined,
    private readonly rollback: Rollback,
  ) {
    this.timeline = new Timeline(trace)
  }

  /** Run `body` as a boot: keep what its phases made if it succeeds, undo it all if it throws (and rethrow). */
  static run<T>(trace: Debug | undefined, body: (phases: BootPhases) => Promise<T>): Promise<T> {
    return Rollback.run((rollback) => body(new BootPhases(trace, rollback)))
  }

  /** Run one phase; what it makes it undoes through `undo`. */
  phase<T>(name: BootPhase, body: (undo: Undo) => Promise<T> | T, mark?: string): Promise<T> {
    return this.timeline.phase(name, () => body((undo) => this.undo(name, undo)), mark)
  }

  /**
   * Register the undo of what a phase made, after the phase: for what is kept only once a later
   * step worked (a template restore undoes a failed load itself, and the VM then boots cold).
   */
  undo(name: BootPhase, undo: (failure: unknown) => PromiseLike<void> | void): void {
    this.rollback.defer(name, undo)
  }
}
