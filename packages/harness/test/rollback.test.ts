import { describe, expect, test } from 'vitest'
import { ListStack, Rollback } from '../src/sandbox/rollback.js'

describe('Rollback', () => {
  test('a failure undoes every step newest first, each step learns the error, the error is rethrown unchanged', async () => {
    const undone: string[] = []
    const failure = new Error('QEMU exited')
    const err = await Rollback.run(async (rollback) => {
      rollback.defer('cid', () => void undone.push('cid'))
      rollback.defer('dir', (why) => void undone.push(`dir: ${(why as Error).message}`))
      rollback.defer('broken', () => {
        throw new Error('undo failed')
      })
      rollback.defer('qemu', async () => {
        await new Promise((resolve) => setTimeout(resolve, 5))
        undone.push('qemu')
      })
      throw failure
    }).catch((e: unknown) => e)
    expect(err).toBe(failure)
    expect(undone).toEqual(['qemu', 'dir: QEMU exited', 'cid'])
  })

  test('success keeps everything', async () => {
    const undone: string[] = []
    const result = await Rollback.run(async (rollback) => {
      rollback.defer('qemu', () => void undone.push('qemu'))
      return 42
    })
    expect(result).toBe(42)
    expect(undone).toEqual([])
  })

  test("the Node 22 fallback stack behaves like Node 24's AsyncDisposableStack", async () => {
    for (const stack of [new AsyncDisposableStack(), new ListStack()]) {
      const order: number[] = []
      stack.defer(() => void order.push(1))
      stack.defer(async () => void order.push(2))
      const moved = stack.move()
      await stack.disposeAsync()
      expect(order).toEqual([])
      await moved.disposeAsync()
      expect(order).toEqual([2, 1])
    }
  })
})
