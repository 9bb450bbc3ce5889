import { listenHostForwards } from './host-forwards.js'
import { startEgress } from './netns-egress.js'
import type { NetnsLaunch } from './private-network.js'

/**
 * What a QEMU in a private namespace needs once it runs: the user's forwards listened on by the
 * harness on the host's 127.0.0.1, and outbound network (slirp4netns) in mode 'nat'. stop() ends
 * both; boot calls it when QEMU exits (and on a failed boot). unref() lets this process exit while
 * QEMU runs (a detached VM); both then end with this process.
 */
export async function attachNetns(launch: NetnsLaunch, qemuPid: number, log: (line: string) => void): Promise<{ stop(): void; unref(): void }> {
  const forwards = await listenHostForwards(launch.hostForwards)
  const egress = launch.egress ? startEgress(qemuPid, launch.userns, log) : undefined
  return {
    stop() {
      forwards.close()
      egress?.stop()
    },
    unref() {
      forwards.unref()
      egress?.unref()
    },
  }
}
