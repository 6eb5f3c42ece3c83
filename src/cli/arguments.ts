/**
 * The command line, read before anything starts: what to run, or a usage error that says
 * what was meant. A typo must never fall through to the demo or to another configuration.
 */
import { existsSync, readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { TokenHandlerError } from '../errors.js';
import { CONFIG_USAGE } from './config-command.js';

export type Command =
  | { kind: 'help' }
  | { kind: 'version' }
  | { kind: 'config'; subcommand: string | undefined; configFile: string | undefined }
  | { kind: 'serve'; demo: boolean; configFile: string | undefined };

/** A command line that cannot be run: `message` says why and what was probably meant. */
export class UsageError extends TokenHandlerError {
  readonly code = 'usage';
}

export const USAGE =
  'usage: token-handler [--config FILE]\n  runs token-handler; configuration: FILE (YAML or JSON) or TH_CONFIG, then TH_* environment variables\n' +
  '       token-handler demo\n  the built-in demo on 127.0.0.1 (development only; also what runs when there is no configuration at all)\n' +
  CONFIG_USAGE +
  '       token-handler --version | --help\n' +
  '\nenvironment:\n' +
  '  TH_CONFIG             the configuration file, when --config is not given\n' +
  '  TH_<KEY>              any configuration key: TH_ + its path in UPPER_SNAKE_CASE, e.g. TH_OIDC_CLIENT_SECRET,\n' +
  '                        TH_SESSION_SECRETS (comma-separated), TH_ROUTES (JSON); see config/example.yaml\n' +
  '  TH_LISTEN_PORT        the port (for the demo too)\n' +
  '  NODE_ENV=production   never start the demo for want of configuration\n' +
  '  OTEL_*                OpenTelemetry tracing (off unless an exporter is configured)\n' +
  '\nAny TH_* variable or a configuration file means the demo does not start by itself.\n';

/** Parses the arguments (without node and the script). */
export function parseCommand(argv: readonly string[]): Command {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      options: { config: { type: 'string', short: 'c' }, help: { type: 'boolean', short: 'h' }, version: { type: 'boolean', short: 'v' } },
      allowPositionals: true,
    });
  } catch (err) {
    throw new UsageError(`${(err as Error).message.split('\n', 1)[0]} (see --help)`);
  }
  const { values, positionals } = parsed;
  if (values.help) return { kind: 'help' };
  if (values.version) return { kind: 'version' };
  const [command, ...rest] = positionals;
  if (command === 'config') {
    if (rest.length > 1) throw unexpected(rest[1]!, `"token-handler config ${rest[0]}" takes no other argument`);
    return { kind: 'config', subcommand: rest[0], configFile: values.config };
  }
  if (command === 'demo') {
    if (rest.length > 0) throw unexpected(rest[0]!, 'the demo takes no argument');
    return { kind: 'serve', demo: true, configFile: values.config };
  }
  if (command !== undefined) throw unexpected(command, 'expected --config FILE, demo or config');
  return { kind: 'serve', demo: false, configFile: values.config };
}

/** A positional argument nobody asked for; a file's name most likely meant --config. */
function unexpected(argument: string, expected: string): UsageError {
  const looksLikeFile = /\.(ya?ml|json)$/i.test(argument) || existsSync(argument);
  const hint = looksLikeFile ? `; to run with this file: token-handler --config ${argument}` : ' (see --help)';
  return new UsageError(`"${argument}" is not a command; ${expected}${hint}`);
}

/** The version of this package (package.json sits one level above src/ and dist/). */
export function packageVersion(): string {
  const manifest = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return manifest.version;
}
