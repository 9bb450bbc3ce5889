/**
 * The handles (servers, sockets, child processes) that keep this process's event loop alive
 * now: an unref()'d one is not among them. Node's undocumented `process._getActiveHandles()`,
 * for tests that check what a detached VM leaves holding the host process (#20).
 */
export function heldHandles(): object[] {
  return (process as unknown as { _getActiveHandles(): object[] })._getActiveHandles()
}
