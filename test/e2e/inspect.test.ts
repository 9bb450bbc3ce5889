import { spawn } from 'node:child_process'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { expect, test } from 'vitest'
import { repoRoot, runtimeDir } from './support.js'

const VITEST = join(repoRoot, 'node_modules', 'vitest', 'vitest.mjs')

async function freePort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as { port: number }
  await new Promise((resolve) => server.close(resolve))
  return port
}

/** The inspector's HTTP endpoint, polled until the guest worker has opened it (through the pool's forward). */
async function debuggerUrl(port: number, deadline: number): Promise<string> {
  for (;;) {
    try {
      const list = (await (await fetch(`http://127.0.0.1:${port}/json/list`)).json()) as { webSocketDebuggerUrl: string }[]
      if (list[0]?.webSocketDebuggerUrl) return list[0].webSocketDebuggerUrl.replace(/ws:\/\/[^/]+/, `ws://127.0.0.1:${port}`)
    } catch {}
    if (Date.now() > deadline) throw new Error(`no inspector answered on 127.0.0.1:${port}`)
    await new Promise((r) => setTimeout(r, 500))
  }
}

test("vitest --inspect-brk: a debugger attaches on the host's 127.0.0.1 to the worker in the guest, and the run goes on when it says so", async () => {
  const port = await freePort()
  const child = spawn(process.execPath, [VITEST, 'run', '--pool=stereos', `--inspect-brk=127.0.0.1:${port}`, '--no-file-parallelism'], {
    cwd: join(repoRoot, 'fixtures', 'projects', 'inspect'),
    env: { ...process.env, STEREOS_RUNTIME_DIR: runtimeDir(), NO_COLOR: '1' },
  })
  let output = ''
  child.stdout.on('data', (c: Buffer) => (output += c.toString()))
  child.stderr.on('data', (c: Buffer) => (output += c.toString()))
  const exited = new Promise<number | null>((resolve) => child.on('exit', resolve))
  try {
    const url = await debuggerUrl(port, Date.now() + 240_000)
    expect(output).toMatch(new RegExp(`stereos: debugger: attach to 127\\.0\\.0\\.1:${port} \\(the guest worker of .*debugged\\.test\\.ts in VM vm-`))
    const ws = new WebSocket(url)
    await new Promise((resolve, reject) => {
      ws.onopen = resolve
      ws.onerror = reject
    })
    let id = 0
    ws.onmessage = (event) => {
      const message = JSON.parse(String(event.data)) as { method?: string }
      // Wherever the debugger pauses (Vitest asks for a breakpoint at the first test file), go on.
      if (message.method === 'Debugger.paused') ws.send(JSON.stringify({ id: ++id, method: 'Debugger.resume' }))
    }
    for (const method of ['Runtime.enable', 'Debugger.enable', 'Runtime.runIfWaitingForDebugger']) ws.send(JSON.stringify({ id: ++id, method }))
    const code = await exited
    ws.close()
    expect(code, output).toBe(0)
    expect(output).toMatch(/✓ debugged\.test\.ts/)
    // --inspect-brk made the worker wait for this debugger (Vitest opens the inspector with
    // waitForDebugger): the run could only finish because the client attached through the forward.
  } finally {
    child.kill('SIGKILL')
  }
}, 600_000)
