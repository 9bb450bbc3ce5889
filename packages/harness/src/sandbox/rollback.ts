import { debug } from '../log.js'

const trace = debug('stereos:boot')

/** The part of AsyncDisposableStack that Rollback needs. */
interface UndoStack {
  defer(onDisposeAsync: () => PromiseLike<void> | void): void
  move(): unknown
  disposeAsync(): Promise<void>
}

/** Node 22 has no AsyncDisposableStack (Node 24 does): the same LIFO semantics, minimally. */
export class ListStack implements UndoStack {
  private steps: (() => PromiseLike<void> | void)[] = []

  defer(onDisposeAsync: () => PromiseLike<void> | void): void {
    this.steps.push(onDisposeAsync)
  }

  move(): ListStack {
    const moved = new ListStack()
    moved.steps = this.steps
    this.steps = []
    return moved
  }

  async disposeAsync(): Promise<void> {
    const steps = this.steps.reverse()
    this.steps = []
    for (const step of steps) await step()
  }
}

function newStack(): UndoStack {
  return typeof AsyncDisposableStack === 'function' ? new AsyncDisposableStack() : new ListStack()
}

/**
 * The undo steps of a boot on an AsyncDisposableStack: each phase registers how to undo what it
 * made, and a failure undoes them newest first (QEMU killed before its CID is released, the VM
 * dir kept or cleaned last). Undo steps never throw: the boot's own error is what the caller
 * gets, and a failing undo step is traced (DEBUG=stereos:boot).
 */
export class Rollback {
  private readonly stack = newStack()
  private failure: unknown

  /** Register how to undo a step; `undo` learns the error that failed the boot. */
  defer(what: string, undo: (failure: unknown) => PromiseLike<void> | void): void {
    this.stack.defer(async () => {
      try {
        await undo(this.failure)
      } catch (err) {
        trace(`rollback: ${what} failed: ${(err as Error).message}`)
      }
    })
  }

  /** Run `body`; keep what it made if it succeeds, undo it all if it throws (and rethrow). */
  static async run<T>(body: (rollback: Rollback) => Promise<T>): Promise<T> {
    const rollback = new Rollback()
    try {
      const result = await body(rollback)
      rollback.stack.move() // the caller owns everything now; the moved stack is dropped
      return result
    } catch (err) {
      rollback.failure = err
      trace(`rollback after: ${(err as Error).message?.split('\n')[0]}`)
      await rollback.stack.disposeAsync()
      throw err
    }
  }
}
