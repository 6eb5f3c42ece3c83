#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { buildApp } from './app.js';
import { CONFIG_USAGE, EXIT_CONFIG, printConfigProblems, runConfigCommand } from './cli/config-command.js';
import { ConfigError, loadConfig } from './config/load.js';
import { demoMode } from './demo/mode.js';

async function main(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: { config: { type: 'string', short: 'c' }, help: { type: 'boolean', short: 'h' } },
    allowPositionals: true,
  });
  if (values.help) {
    process.stdout.write(
      'usage: token-handler [--config FILE]\n  configuration: FILE (YAML or JSON) or TH_CONFIG, then TH_* environment variables\n' +
        '       token-handler demo\n  the built-in demo on 127.0.0.1 (also what runs when there is no configuration at all)\n' +
        CONFIG_USAGE,
    );
    return;
  }

  const [command, ...rest] = positionals;
  if (command === 'config') {
    process.exitCode = await runConfigCommand(rest[0], values.config, process.env);
    return;
  }
  // A file given without --config would otherwise be ignored, and the demo or the
  // environment's configuration would run instead of the one meant.
  if (command !== undefined && command !== 'demo') {
    process.stderr.write(`token-handler: "${command}" is not a command; expected --config FILE, demo or config (see --help)\n`);
    process.exit(EXIT_CONFIG);
  }

  // The demo: explicitly, or when nothing is configured (src/demo/mode.ts). Loaded lazily,
  // so the service itself never loads the demo's code.
  const demo = demoMode(positionals, values.config, process.env);
  if (demo) {
    const { runDemoCli } = await import('./demo/cli.js');
    if (await runDemoCli(demo, process.env)) return;
  }

  let config;
  try {
    config = await loadConfig({ file: values.config, env: process.env });
  } catch (err) {
    if (err instanceof ConfigError) {
      printConfigProblems(err);
      process.exit(EXIT_CONFIG);
    }
    throw err;
  }

  const app = await buildApp(config);
  let closing = false;
  const shutdown = (signal: string) => {
    if (closing) return;
    closing = true;
    const graceMs = config.shutdown.gracePeriodSeconds * 1000;
    app.log.info({ signal, gracePeriodSeconds: config.shutdown.gracePeriodSeconds }, 'shutting down: not ready, finishing in-flight requests');
    app.beginShutdown();
    // In-flight requests that outlive the grace period are cut off.
    const deadline = setTimeout(() => {
      app.log.warn('grace period over: closing the remaining connections');
      app.server.closeAllConnections();
    }, graceMs);
    deadline.unref();
    // Keep-alive connections whose last request just finished would hold close() until
    // their idle timeout: close them as they become idle.
    const sweeper = setInterval(() => app.server.closeIdleConnections(), 100);
    sweeper.unref();
    app.close().then(
      () => {
        clearTimeout(deadline);
        clearInterval(sweeper);
        app.log.info('shut down');
        process.exit(0);
      },
      (err: unknown) => {
        app.log.error({ err }, 'error while shutting down');
        process.exit(1);
      },
    );
  };
  process.once('SIGTERM', () => shutdown('SIGTERM'));
  process.once('SIGINT', () => shutdown('SIGINT'));
  await app.listen({ host: config.listen.host, port: config.listen.port });
}

main(process.argv.slice(2)).catch((err: unknown) => {
  process.stderr.write(`token-handler: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
