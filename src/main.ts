#!/usr/bin/env node
import { buildApp } from './app.js';
import { packageVersion, parseCommand, USAGE, UsageError, type Command } from './cli/arguments.js';
import { EXIT_CONFIG, printConfigProblems, runConfigCommand } from './cli/config-command.js';
import { ConfigError, loadConfig } from './config/load.js';
import { demoMode } from './demo/mode.js';

async function main(argv: string[]): Promise<void> {
  let command: Command;
  try {
    command = parseCommand(argv);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    // A file given without --config, or a typo, must not start the demo or another configuration.
    process.stderr.write(`token-handler: ${err.message}\n`);
    process.exit(EXIT_CONFIG);
  }
  switch (command.kind) {
    case 'help':
      process.stdout.write(USAGE);
      return;
    case 'version':
      process.stdout.write(`token-handler ${packageVersion()}\n`);
      return;
    case 'config':
      process.exitCode = await runConfigCommand(command.subcommand, command.configFile, process.env);
      return;
    case 'serve':
      break;
  }

  // The demo: explicitly, or when nothing is configured (src/demo/mode.ts). Loaded lazily,
  // so the service itself never loads the demo's code.
  const demo = demoMode(command.demo, command.configFile, process.env);
  if (demo) {
    const { runDemoCli } = await import('./demo/cli.js');
    if (await runDemoCli(demo, process.env)) return;
  }

  let config;
  try {
    config = await loadConfig({ file: command.configFile, env: process.env });
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
