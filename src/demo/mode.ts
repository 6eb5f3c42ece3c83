/**
 * When the CLI runs the demo instead of the configured service:
 * - `token-handler demo` (explicit; TH_LISTEN_PORT sets its port), or
 * - no configuration at all (default): no `--config`, no `TH_CONFIG`, no other `TH_*`
 *   variable, and not `NODE_ENV=production` — a process with any sign of configuration,
 *   or a production one, must say what is missing, not start a provider that accepts any
 *   password.
 * Empty variables count as unset, as they do for the configuration.
 */
export type DemoMode = 'explicit' | 'default' | null;

export function demoMode(asked: boolean, configFile: string | undefined, env: Record<string, string | undefined>): DemoMode {
  if (asked) return 'explicit';
  if (configFile !== undefined) return null;
  if (env.NODE_ENV === 'production') return null;
  const configured = Object.entries(env).some(
    ([name, value]) => name.startsWith('TH_') && value !== undefined && value.trim() !== '',
  );
  return configured ? null : 'default';
}
