/**
 * When the CLI runs the demo instead of the configured service:
 * - `token-handler demo` (explicit), or
 * - no configuration at all (default): no `--config`, no `TH_CONFIG`, no other `TH_*`
 *   variable (`TH_LISTEN_PORT` alone still means "the demo, on this port"), and not
 *   `NODE_ENV=production` — a production process without configuration must say what
 *   is missing, not start a provider that accepts any password.
 * Empty variables count as unset, as they do for the configuration.
 */
export type DemoMode = 'explicit' | 'default' | null;

/** TH_* variables that do not count as configuration for the demo decision. */
const DEMO_VARIABLES = new Set(['TH_LISTEN_PORT']);

export function demoMode(positionals: readonly string[], configFile: string | undefined, env: Record<string, string | undefined>): DemoMode {
  if (positionals[0] === 'demo') return 'explicit';
  if (configFile !== undefined) return null;
  if (env.NODE_ENV === 'production') return null;
  const configured = Object.entries(env).some(
    ([name, value]) => name.startsWith('TH_') && !DEMO_VARIABLES.has(name) && value !== undefined && value.trim() !== '',
  );
  return configured ? null : 'default';
}
