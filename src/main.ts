#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { buildApp } from './app.js';
import { ConfigError, loadConfig } from './config/load.js';

/** Exit code for invalid configuration (DESIGN.md). */
const EXIT_CONFIG = 2;

async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: { config: { type: 'string', short: 'c' }, help: { type: 'boolean', short: 'h' } },
    allowPositionals: true,
  });
  if (values.help) {
    process.stdout.write('usage: token-handler [--config FILE]\n  configuration: FILE (YAML or JSON) or TH_CONFIG, then TH_* environment variables\n');
    return;
  }

  let config;
  try {
    config = await loadConfig({ file: values.config, env: process.env });
  } catch (err) {
    if (err instanceof ConfigError) {
      for (const problem of err.problems) process.stderr.write(`config: ${problem}\n`);
      process.exit(EXIT_CONFIG);
    }
    throw err;
  }

  const app = await buildApp(config);
  let closing = false;
  const shutdown = (signal: string) => {
    if (closing) return;
    closing = true;
    app.log.info({ signal }, 'shutting down');
    app.close().then(
      () => process.exit(0),
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
