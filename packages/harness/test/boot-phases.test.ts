import { describe, expect, test } from 'vitest'
import { BOOT_PHASES, BootPhases } from '../src/sandbox/phases.js'

describe('BootPhases: named phases, one undo stack', () => {
  test('a failing phase undoes every earlier phase newest first, each under its name; the error is rethrown', async () => {
    const undone: string[] = []
    const traced: string[] = []
    const failure = new Error('stereosd never answered')
    const err = await BootPhases.run(
      Object.assign((line: string) => void traced.push(line), { namespace: 'stereos:boot', enabled: true }),
      async (phases) => {
        await phases.phase('vm-dir', (undo) => undo((why) => void undone.push(`vm-dir: ${(why as Error).message}`)))
        await phases.phase('qemu', (undo) => undo(() => void undone.push('qemu')), 'qemu-started')
        phases.undo('resume', () => void undone.push('resume'))
        await phases.phase('stereosd', () => {
          throw failure
        })
      },
    ).catch((e: unknown) => e)
    expect(err).toBe(failure)
    expect(undone).toEqual(['resume', 'qemu', 'vm-dir: stereosd never answered'])
    expect(traced.some((line) => line.startsWith('stereosd: failed after'))).toBe(true)
  })

  test('success keeps everything and the timeline has the marks of the phases that set one', async () => {
    const undone: string[] = []
    let entries: string[] = []
    await BootPhases.run(undefined, async (phases) => {
      await phases.phase('disk', (undo) => undo(() => void undone.push('disk')), 'disk-ready')
      await phases.phase('network', () => undefined)
      entries = phases.timeline.entries.map((e) => e.phase)
    })
    expect(undone).toEqual([])
    expect(entries).toEqual(['disk-ready'])
  })

  test('the list names each phase once, the shared restore phases in their order', () => {
    expect(new Set(BOOT_PHASES).size).toBe(BOOT_PHASES.length)
    // Cold boot, template restore and capture restore: 'resume' is a restore's alone.
    expect(BOOT_PHASES.slice(BOOT_PHASES.indexOf('vm-dir'), BOOT_PHASES.indexOf('stereosd') + 1)).toEqual([
      'vm-dir',
      'network',
      'template-save',
      'disk',
      'qemu',
      'resume',
      'stereosd',
    ])
  })
})
