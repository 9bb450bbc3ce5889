/**
 * The environment a guest test process gets. An allowlist, not a blocklist: the host's
 * environment is full of credentials (GITHUB_TOKEN, NPM_TOKEN, ACTIONS_ID_TOKEN_REQUEST_TOKEN,
 * cloud keys), proxies and paths that describe the host (NODE_EXTRA_CA_CERTS, NODE_V8_COVERAGE),
 * and the guest is untrusted. What passes:
 * - Vitest's own variables and the few that shape output or locale (below);
 * - every variable of the project's `test.env` (the user put it there for the tests);
 * - the `env` option of stereos() and describe.sandbox (explicit values).
 */
const RUN_VARIABLES = /^(VITEST|VITEST_[A-Z0-9_]+|TEST|NODE_ENV|TZ|LANG|LANGUAGE|LC_[A-Z_]+|CI|TERM|COLORTERM|FORCE_COLOR|NO_COLOR|FORCE_TTY)$/

/**
 * @param env         what Vitest hands the pool (host process.env + Vitest's + `test.env`)
 * @param configEnv   the project's resolved `test.env`
 * @param explicit    the `env` option (stereos() merged with describe.sandbox)
 */
export function guestEnv(
  env: Partial<NodeJS.ProcessEnv>,
  configEnv: Record<string, unknown> = {},
  explicit: Record<string, string> = {},
): Record<string, string> {
  const out: Record<string, string> = {}
  for (const [key, value] of Object.entries(env)) {
    if (value === undefined) continue
    if (RUN_VARIABLES.test(key) || Object.hasOwn(configEnv, key)) out[key] = value
  }
  return { ...out, ...explicit }
}
