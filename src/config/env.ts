/**
 * Environment binding: every key of the schema has a TH_* variable named after its path,
 * and its text is turned into the type the schema asks for (numbers, booleans,
 * comma-separated lists, JSON). Conversion is done here by the schema's type rather than
 * by ajv's coerceTypes, which would also accept "8080" written as a string in a file.
 */
import type { TSchema } from '@sinclair/typebox';
import { deleteAt, isRecord, isSection, setAt, type KeyPath } from './paths.js';
import { appEnvBindings } from './apps.js';
import type { ProblemList } from './problems.js';
import { expectation } from './problems.js';
import { ConfigSchema } from './schema.js';
import { didYouMean } from './suggest.js';

const ENV_PREFIX = 'TH_';
/** Names the config file; read by `loadConfig`, not a key. */
export const CONFIG_FILE_ENV = 'TH_CONFIG';

/** `['oidc', 'clientSecret']` → `TH_OIDC_CLIENT_SECRET`. */
export function envName(path: readonly string[]): string {
  return ENV_PREFIX + path.map((segment) => segment.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase()).join('_');
}

interface EnvBinding {
  name: string;
  path: string[];
  schema: TSchema;
}

/** Every key below a section gets a variable; a list of routes or a map is set whole. */
function envBindings(section: TSchema, path: string[] = []): EnvBinding[] {
  if (!isSection(section)) return [];
  return Object.entries(section.properties).flatMap(([key, child]) =>
    isSection(child) ? envBindings(child, [...path, key]) : [{ name: envName([...path, key]), path: [...path, key], schema: child }],
  );
}

const bindings = envBindings(ConfigSchema);

/** Every key's variable with the key's path and schema, in schema order. */
export function configEnvBindings(): readonly EnvBinding[] {
  return bindings;
}

/** Every environment variable that overrides a key, in schema order. */
export function configEnvNames(): string[] {
  return bindings.map((binding) => binding.name);
}

/** Comma-separated text → its items, trimmed, empty ones dropped. */
export function splitList(text: string): string[] {
  return text
    .split(',')
    .map((item) => item.trim())
    .filter((item) => item !== '');
}

const NOT_JSON = Symbol('not JSON');

/**
 * Environment text → the value the schema expects. Text that does not convert is kept as
 * text, so validation reports it with the same wording as a bad file value.
 */
function fromEnvText(schema: TSchema, text: string): unknown {
  if (Array.isArray(schema.anyOf)) {
    // listen.trustProxy: true/false, a number (refused with a reason), or a list as text.
    if (/^(true|false)$/i.test(text)) return text.toLowerCase() === 'true';
    return /^\d+$/.test(text) ? Number(text) : text;
  }
  switch (schema.type) {
    case 'integer':
      return /^[+-]?\d+$/.test(text) ? Number(text) : text;
    case 'boolean':
      if (/^(true|1)$/i.test(text)) return true;
      if (/^(false|0)$/i.test(text)) return false;
      return text;
    case 'array':
      if ((schema.items as TSchema | undefined)?.type === 'string') return splitList(text);
      return parseJson(text);
    case 'object':
      return parseJson(text);
    default:
      return text;
  }
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return NOT_JSON;
  }
}

/**
 * The configuration with the environment on top: a copy of `input` with every set TH_*
 * variable applied. Unknown TH_* variables and unreadable JSON text are reported.
 */
export function applyEnvironment(input: Record<string, unknown>, env: Record<string, string | undefined>, problems: ProblemList): Record<string, unknown> {
  const merged = structuredClone(input);
  const apply = (name: string, path: KeyPath, schema: TSchema) => {
    // Empty counts as unset: `FOO=` in compose files and shells usually means "not given".
    const text = env[name]?.trim();
    if (text === undefined || text === '') return;
    problems.setOrigin(path, name);
    const value = fromEnvText(schema, text);
    if (value === NOT_JSON) {
      problems.addEnvironment(path, `is not valid JSON; expected ${expectation(schema)}`);
      // The variable replaces the file's value even when it cannot be read.
      deleteAt(merged, path);
      return;
    }
    setAt(merged, path, value);
  };
  for (const binding of bindings) apply(binding.name, binding.path, binding.schema);

  // Per app (apps: in the file or TH_APPS): TH_APPS_<NAME>_<KEY>, e.g. TH_APPS_SHOP_OIDC_CLIENT_SECRET.
  const appNames: string[] = [];
  const known = [CONFIG_FILE_ENV, ...configEnvNames()];
  if (Array.isArray(merged.apps)) {
    merged.apps.forEach((app: unknown, index) => {
      if (!isRecord(app) || typeof app.name !== 'string') return;
      appNames.push(app.name);
      for (const binding of appEnvBindings(app.name, envName)) {
        known.push(binding.name);
        apply(binding.name, ['apps', index, ...binding.path], binding.schema);
      }
    });
  }

  for (const name of Object.keys(env).filter((n) => n.startsWith(ENV_PREFIX) && !known.includes(n))) {
    const perApp = name.startsWith(`${ENV_PREFIX}APPS_`)
      ? ` (per-app variables are TH_APPS_<NAME>_<KEY> for an app of apps: ${appNames.length > 0 ? appNames.join(', ') : 'none configured'})`
      : '';
    problems.addEnvironmentLine(
      `${name}: is not a known variable${didYouMean(name, known)}${perApp}; every key's variable is TH_ + its path in UPPER_SNAKE_CASE, e.g. TH_OIDC_CLIENT_SECRET`,
    );
  }
  return merged;
}
