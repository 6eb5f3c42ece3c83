/**
 * `token-handler demo` and `npm start` without configuration: starts the demo stack,
 * prints where to go and how to sign in, and stops cleanly on SIGINT/SIGTERM.
 */
import { DEFAULT_DEMO_PORT, DemoUnavailableError, startDemo, type DemoStack } from './index.js';
import type { DemoMode } from './mode.js';

/**
 * Runs the demo until a signal stops the process. Resolves false, after a note, when
 * the demo was only the default (no configuration) and cannot run here: the caller then
 * goes on with the configuration, which reports what is missing.
 */
export async function runDemoCli(mode: Exclude<DemoMode, null>, env: Record<string, string | undefined>): Promise<boolean> {
  const port = demoPort(env.TH_LISTEN_PORT);
  if (port === undefined) {
    process.stderr.write(`demo: TH_LISTEN_PORT is ${JSON.stringify(env.TH_LISTEN_PORT)}; expected a port from 0 to 65535\n`);
    process.exit(2);
  }

  let demo: DemoStack;
  try {
    demo = await startDemo({ port });
  } catch (err) {
    if (err instanceof DemoUnavailableError) {
      if (mode === 'default') {
        process.stderr.write(`token-handler: no configuration given, and ${err.message}\n`);
        process.stderr.write('token-handler: reading the configuration instead (see config/example.yaml):\n');
        return false;
      }
      process.stderr.write(`token-handler demo: ${err.message}\n`);
      process.exit(1);
    }
    if ((err as { code?: unknown }).code === 'EADDRINUSE') {
      process.stderr.write(
        `token-handler demo: 127.0.0.1:${port} is already in use; choose another port, e.g. TH_LISTEN_PORT=${port === DEFAULT_DEMO_PORT ? 8081 : port + 1} token-handler demo\n`,
      );
      process.exit(1);
    }
    throw err;
  }

  process.stdout.write(banner(demo, mode));

  let closing = false;
  const shutdown = () => {
    if (closing) return;
    closing = true;
    demo.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.once('SIGINT', shutdown);
  process.once('SIGTERM', shutdown);
  return true;
}

function demoPort(raw: string | undefined): number | undefined {
  const text = raw?.trim();
  if (text === undefined || text === '') return DEFAULT_DEMO_PORT;
  if (!/^\d+$/.test(text)) return undefined;
  const port = Number(text);
  return port <= 65535 ? port : undefined;
}

function banner(demo: DemoStack, mode: Exclude<DemoMode, null>): string {
  const why = mode === 'default' ? 'no configuration given, so this is the built-in demo' : 'built-in demo';
  return [
    '',
    `  token-handler demo is running (${why}; development only)`,
    '',
    `    Open       ${demo.url}`,
    '    Sign in    with any user name and any password, e.g. alice / secret',
    '',
    `    OpenID provider  ${demo.providerUrl}  (embedded oidc-provider: ${demo.accessTokenSeconds} s access tokens, rotating refresh tokens)`,
    `    Demo API         ${demo.apiUrl}  (behind token-handler at ${demo.publicUrl}/api, e.g. /api/hello)`,
    '',
    '  Everything listens on 127.0.0.1 over plain http, so the session cookie has no __Host- prefix and no Secure flag.',
    '  To use a real provider: token-handler --config FILE (see config/example.yaml). Stop with Ctrl+C.',
    '',
    '',
  ].join('\n');
}
