/**
 * `token-handler config schema` prints the configuration's JSON Schema;
 * `token-handler config check [--config FILE]` validates a configuration (file or
 * TH_CONFIG, then TH_* variables) without starting anything, for CI and deploy scripts.
 */
import { ConfigError, loadConfig } from '../config/load.js';
import { CONFIG_FILE_ENV } from '../config/env.js';
import { configJsonSchemaText } from '../config/json-schema.js';
import { appsOf } from '../config/apps.js';

/** Exit code for invalid configuration, and for a command line that cannot be run. */
export const EXIT_CONFIG = 2;

export const CONFIG_USAGE =
  '       token-handler config schema\n  prints the JSON Schema of the configuration (also config/schema.json)\n' +
  '       token-handler config check [--config FILE]\n  validates the configuration without starting: exit 0 and one OK line, or 2 and one line per problem\n';

/** One line per problem on stderr, as the service prints them at startup. */
export function printConfigProblems(err: ConfigError): void {
  for (const problem of err.problems) process.stderr.write(`config: ${problem}\n`);
}

/** Runs `config <subcommand>`; resolves to the process exit code. */
export async function runConfigCommand(
  subcommand: string | undefined,
  configFile: string | undefined,
  env: Record<string, string | undefined>,
): Promise<number> {
  if (subcommand === 'schema') {
    process.stdout.write(configJsonSchemaText());
    return 0;
  }
  if (subcommand !== 'check') {
    process.stderr.write(`token-handler config: ${subcommand === undefined ? 'a subcommand is missing' : `"${subcommand}" is not a subcommand`}; expected schema or check\n${CONFIG_USAGE}`);
    return EXIT_CONFIG;
  }
  try {
    const config = await loadConfig({ file: configFile, env });
    const fromEnv = env[CONFIG_FILE_ENV];
    const source = configFile ?? (fromEnv ? `${fromEnv} (from ${CONFIG_FILE_ENV})` : 'the environment only');
    const routes = (count: number) => `${count} route${count === 1 ? '' : 's'}`;
    const summary = config.apps
      ? `${config.apps.length} app${config.apps.length === 1 ? '' : 's'}: ${appsOf(config)
          .map((app) => `${app.name} on ${app.host}${app.pathPrefix} (${routes(app.config.routes.length)}, store ${app.config.session.store})`)
          .join(', ')}`
      : `${routes(config.routes.length)}, store ${config.session.store}`;
    process.stdout.write(`config OK: ${source} (${summary})\n`);
    return 0;
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    printConfigProblems(err);
    return EXIT_CONFIG;
  }
}
