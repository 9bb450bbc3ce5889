import { closeSync, fstatSync, openSync, readSync } from 'node:fs'
import { HarnessError } from '../errors.js'
import { sleep } from '../host/sleep.js'
import { SHARE_GUEST_PATH } from '../share/harness-share.js'

/** What the scrub prints on the console when it is done: the host waits for it in serial.log. */
export const SCRUBBED_MARKER = 'stereos-harness capture: guest scrubbed'
const SCRIPT = '/run/stereos-harness-scrub.sh'
/** Free memory the fill leaves the guest, so nothing in it is pushed to the OOM killer. */
const FILL_RESERVE_KIB = 64 * 1024

/**
 * As root in the guest, before its RAM and disk are saved: everything the host gave the VM that
 * is secret goes, and the memory that held it is overwritten where the guest can reach it.
 * - stereosd's secrets (the agent token among them): overwritten in place on their tmpfs, removed;
 * - authorized_keys of every user (the keys inject_ssh_key wrote);
 * - the processes that hold those values in their heaps (measured on the fixture guest by
 *   searching /proc/<pid>/mem after the old scrub): the guest agent (the token), stereosd (every
 *   inject_secret and inject_ssh_key message it was sent) and agentd (it reads the secrets dir
 *   every tick). The agent is killed (`debug` starts a new one); stereosd and agentd are stopped,
 *   and started again fresh once the memory is zeroed, so the restored VM answers the host
 *   (which injects a new SSH key through stereosd) yet holds nothing it was given. Under systemd
 *   through their units; under another init (the fixture's busybox, which respawns nothing) by
 *   running their own command lines again (their arguments hold no spaces);
 * - 9p mounts (overlays on them first): QEMU refuses to migrate while one is mounted;
 * - free memory filled with zeros (one buffer the size of what is free, less a reserve) and
 *   released, so the freed pages of every stopped holder hold zeros. The page cache is kept, not
 *   dropped and filled: its pages hold what files hold (the disk's are in the capture's disk, which
 *   is searched; a share's go with its unmount), and under TCG zeroing the pages freed from the
 *   killed daemons' code is slow (measured: scrub 3.0-3.6 s with the drop, 2.3-2.5 s without; the
 *   capture grows 36 to 46 MB on the fixture).
 * It runs detached (the agent that started it, or the SSH session, goes away while it runs) and
 * says it is done on the console.
 */
export function scrubScript(): string {
  return [
    'set -u',
    'exec </dev/null',
    // Let the session that started this (its pids are the arguments) end first, 1 s at most:
    // its memory is freed before the fill below.
    'n=0; for p in "$@"; do while [ -d "/proc/$p" ] && [ $n -lt 20 ]; do sleep 0.05; n=$((n + 1)); done; done',
    'wipe() { [ -f "$1" ] || return 0; n=$(wc -c <"$1"); dd if=/dev/zero of="$1" bs=1 count="$n" conv=notrunc,fsync 2>/dev/null; rm -f "$1"; }',
    'for f in /run/stereos/secrets/* /run/stereos/secrets/.[!.]*; do wipe "$f"; done',
    'for h in /root /home/*; do wipe "$h/.ssh/authorized_keys"; done',
    // `read` drops a command line's NULs (ash, bash): one pass over /proc without a process each.
    `for p in /proc/[0-9]*; do c=; read -r c <"$p/cmdline" 2>/dev/null; case "$c" in *"${SHARE_GUEST_PATH}/lib/agent/main.js"*) kill -9 "\${p#/proc/}" 2>/dev/null;; esac; done`,
    ...stopDaemons(),
    ...unmountShares(),
    'sync',
    `free=$(awk '/^MemFree:/{print $2}' /proc/meminfo); fill=$((free - ${FILL_RESERVE_KIB}))`,
    'if [ "$fill" -gt 0 ]; then',
    // One anonymous buffer, every page faulted in zeroed (a third faster than a tmpfs file under
    // TCG: no page-cache bookkeeping); a tmpfs file when that buffer cannot be had.
    '  if ! dd if=/dev/zero of=/dev/null bs=${fill}k count=1 2>/dev/null; then',
    '    d=/run/stereos-harness-fill; mkdir -p $d',
    '    if mount -t tmpfs -o size=${fill}k stereos-harness-fill $d; then dd if=/dev/zero of=$d/zero bs=1M count=$((fill / 1024)) 2>/dev/null; umount $d; fi',
    '    rmdir $d',
    '  fi',
    'fi',
    ...startDaemons(),
    `rm -f ${SCRIPT}`,
    `echo "${SCRUBBED_MARKER}"`,
  ].join('\n')
}

/**
 * Take the 9p shares down, innermost first (an overlay, the project view, sits on its share).
 * A process whose working directory, root, program, open file or mapping is under one keeps it
 * mounted (a server the failed test started in the project, say), and QEMU cannot save a VM with
 * a 9p share mounted: such a process is stopped, and named on the console (the host logs it).
 */
function unmountShares(): string[] {
  return [
    'holders() { for p in /proc/[0-9]*; do hit=; for l in "$p/cwd" "$p/root" "$p/exe" "$p"/fd/*; do t=$(readlink "$l" 2>/dev/null) || continue; case "$t" in "$1" | "$1"/*) hit=1; break ;; esac; done; [ -z "$hit" ] && grep -qF " $1/" "$p/maps" 2>/dev/null && hit=1; [ -n "$hit" ] && echo "${p#/proc/}"; done; }',
    `for m in $(awk '$3=="overlay"||$3=="9p"{l[n++]=$2} END{for(i=n-1;i>=0;i--)print l[i]}' /proc/mounts); do`,
    '  umount "$m" 2>/dev/null && continue',
    '  for pid in $(holders "$m"); do',
    '    [ "$pid" = $$ ] && continue',
    '    echo "stereos-harness capture: stopped pid $pid ($(cat /proc/$pid/comm 2>/dev/null)): it held $m, which must be unmounted to save the VM"',
    '    kill -9 "$pid" 2>/dev/null',
    '  done',
    '  n=0; until umount "$m" 2>/dev/null; do n=$((n + 1)); [ $n -gt 40 ] && { echo "stereos-harness capture: cannot unmount $m (busy)"; break; }; sleep 0.05; done',
    'done',
  ]
}

/** The control-plane daemons, in start order (agentd needs stereosd). */
const DAEMONS = ['stereosd', 'agentd'] as const
const UNITS = DAEMONS.map((name) => `${name}.service`).join(' ')

/**
 * Stop stereosd and agentd, and wait until they are gone (their memory freed). Under systemd by
 * unit; otherwise each is killed and its command line kept (in $restart_<name>) to start it again.
 * A daemon is found by its program's name: `stereosd …`, or `node …/stereosd.mjs …` (the fixture).
 */
function stopDaemons(): string[] {
  return [
    'systemd=0; [ -d /run/systemd/system ] && command -v systemctl >/dev/null && systemd=1',
    // Only a command line that names the daemon (read, as above) is split into its arguments.
    'daemon_pids() { n=$1; for p in /proc/[0-9]*; do c=; read -r c <"$p/cmdline" 2>/dev/null; case "$c" in *"$n"*) ;; *) continue;; esac; set -- $(tr \'\\0\' \' \' <"$p/cmdline" 2>/dev/null) "" ""; a=${1##*/}; b=${2##*/}; if [ "$a" = "$n" ] || { [ "$a" = node ] && [ "$b" = "$n.mjs" ]; }; then echo "${p#/proc/}"; fi; done; }',
    `if [ $systemd = 1 ]; then systemctl stop ${UNITS}; else`,
    ...DAEMONS.map((name) =>
      [
        `  for pid in $(daemon_pids ${name}); do`,
        `    restart_${name}=$(tr '\\0' ' ' </proc/$pid/cmdline); kill -9 $pid`,
        '    while [ -d /proc/$pid ]; do sleep 0.05; done',
        '  done',
      ].join('\n'),
    ),
    'fi',
  ]
}

/** Start them again, fresh: after the fill, so the pages they freed are zeroed first. */
function startDaemons(): string[] {
  return [
    `if [ $systemd = 1 ]; then systemctl start --no-block ${UNITS}; else`,
    ...DAEMONS.map(
      (name) =>
        `  [ -n "\${restart_${name}:-}" ] && (cd / && setsid sh -c "exec \${restart_${name}} 2>&1 | awk -v p='${name}: ' '{ print p \\$0; fflush() }'" </dev/null >/dev/console 2>&1 &)`,
    ),
    'fi',
  ]
}

/** The root shell's input that installs the scrub and starts it detached, output on the console. */
export function scrubLauncher(): string {
  return [
    'set -e',
    `cat >${SCRIPT} <<'STEREOS_SCRUB'`,
    scrubScript(),
    'STEREOS_SCRUB',
    `chmod 700 ${SCRIPT}`,
    // This shell and its ancestors up to (not with) the daemon below init: the SSH session.
    'session=; p=$$; while :; do pp=$(awk \'/^PPid:/{print $2}\' "/proc/$p/status"); [ "${pp:-1}" -le 1 ] && break; session="$session $p"; p=$pp; done',
    `setsid /bin/sh ${SCRIPT} $session </dev/null >/dev/console 2>&1 &`,
    'echo started',
  ].join('\n')
}

/** serial.log's current length: the scrub's marker is looked for after it. */
export function logLength(path: string): number {
  try {
    const fd = openSync(path, 'r')
    try {
      return fstatSync(fd).size
    } finally {
      closeSync(fd)
    }
  } catch {
    return 0
  }
}

/** Wait for the scrub's marker in serial.log after `from`; its other lines (a busy mount) are returned. */
export async function awaitScrubbed(serialLog: string, from: number, timeoutMs: number, died: () => boolean): Promise<string[]> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const text = readFrom(serialLog, from)
    if (text.includes(SCRUBBED_MARKER)) return text.split('\n').filter((line) => /^stereos-harness capture: (cannot|stopped) /.test(line))
    if (died()) throw new HarnessError('CAPTURE', 'QEMU exited while the guest was being scrubbed for the capture', { logs: { serial: serialLog } })
    if (Date.now() > deadline)
      throw new HarnessError('CAPTURE', `the guest did not finish removing its secrets within ${timeoutMs} ms; nothing was captured`, {
        fix: `read ${serialLog}: the scrub runs as root (admin's sudo) and needs sh, awk, dd and mount in the guest`,
        logs: { serial: serialLog },
      })
    await sleep(20)
  }
}

function readFrom(path: string, from: number): string {
  const fd = openSync(path, 'r')
  try {
    const size = fstatSync(fd).size
    const length = Math.max(0, Math.min(size - from, 1024 * 1024))
    const buf = Buffer.alloc(length)
    readSync(fd, buf, 0, length, from)
    return buf.toString('utf8')
  } finally {
    closeSync(fd)
  }
}
