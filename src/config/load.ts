/**
 * Loading the configuration: the file (YAML or JSON) named by `--config` or TH_CONFIG,
 * the TH_* environment on top, then validation against the one schema (schema.ts) in
 * this order: key checks (checks.ts), the schema itself by ajv (validator.ts), rules
 * across keys (rules.ts). Every problem is collected and reported at once, one line each
 * (problems.ts); invalid configuration is a `ConfigError`.
 */
import { readFile } from 'node:fs/promises';
import { extname } from 'node:path';
import { LineCounter, parseDocument } from 'yaml';
import { runKeyChecks } from './checks.js';
import { applyEnvironment, CONFIG_FILE_ENV, envName } from './env.js';
import { deleteAt, dropNullKeys, isRecord } from './paths.js';
import { addSchemaErrors, ConfigError, describe, expectation, ProblemList, quote } from './problems.js';
import { applyDerivedDefaults, checkAcrossKeys, type Draft } from './rules.js';
import { appProblems, checkApps, effectiveAppConfig, missingAppKeys, storedApp, TOP_LEVEL_KEYS_APPS_MAY_GIVE } from './apps.js';
import { formatPath } from './paths.js';
import { ConfigSchema } from './schema.js';
import type { Config } from './types.js';
import { schemaErrors } from './validator.js';

export { ConfigError } from './problems.js';
export { configEnvNames, envName } from './env.js';

/**
 * Validates raw configuration (a parsed file, or `{}`) with environment overrides
 * on top, fills defaults, and returns a complete `Config`.
 * Throws `ConfigError` listing every problem found.
 */
export function parseConfig(raw: unknown, env: Record<string, string | undefined> = {}): Config {
  const input = raw ?? {};
  if (!isRecord(input)) throw new ConfigError([`(configuration): ${describe(input)}; expected ${expectation(ConfigSchema)}`]);

  const problems = new ProblemList(ConfigSchema);
  const data = applyEnvironment(input, env, problems);
  dropNullKeys(data, ConfigSchema);
  const derived = applyDerivedDefaults(data);
  runKeyChecks(data, problems);
  // With apps, the keys every app needs may come from each app instead of the top level.
  const appsForm = Array.isArray(data.apps);
  addSchemaErrors(problems, schemaErrors(data), data, { skipMissing: appsForm ? [...derived, ...TOP_LEVEL_KEYS_APPS_MAY_GIVE] : derived, envName });

  // Rules across keys see only what passed, as if the reported keys were not there.
  const draft = structuredClone(data);
  for (const path of problems.failedPaths()) deleteAt(draft, path);
  if (appsForm) checkAppsForm(draft, problems);
  else checkAcrossKeys(draft, problems);

  if (problems.size > 0) throw new ConfigError(problems.lines(data));
  // Every key passed the schema that Config is the static type of.
  return draft as Config;
}

/**
 * `apps:`: the rules across apps, the process-wide rules on the top level, and each app's
 * effective configuration (the top level's sections with the app's keys on top) checked
 * like a single-app configuration, its problems under `apps[i]`. Each app is then stored
 * resolved, every inherited key filled.
 */
function checkAppsForm(draft: Record<string, unknown>, problems: ProblemList): void {
  checkApps(draft, problems);
  checkAcrossKeys(draft as Draft, problems, 'process');
  const apps = draft.apps as unknown[];
  apps.forEach((app, index) => {
    if (!isRecord(app)) return;
    const effective = effectiveAppConfig(draft, app);
    for (const path of missingAppKeys(effective)) {
      if (problems.hasFailed(['apps', index, ...path]) || problems.hasFailed(path)) continue;
      problems.addCrossKey(['apps', index, ...path], `is missing; expected it in the app, or once at the top level (${formatPath(path)}) for every app that leaves it out`);
    }
    checkAcrossKeys(effective as Draft, appProblems(problems, index), 'app');
    apps[index] = storedApp(effective);
  });
}

const FILE_EXTENSIONS = ['.yaml', '.yml', '.json'];

/** Parses YAML (JSON is YAML) and reports syntax errors by position, never by quoting the line. */
function parseFileText(text: string, where: string): unknown {
  const lineCounter = new LineCounter();
  const document = parseDocument(text, { prettyErrors: false, lineCounter });
  if (document.errors.length > 0) {
    throw new ConfigError(
      document.errors.map((error) => {
        const { line, col } = lineCounter.linePos(error.pos[0]);
        return `${where}: line ${line}, column ${col}: ${error.message}; expected valid YAML or JSON`;
      }),
    );
  }
  return document.toJS() as unknown;
}

/**
 * Reads the configuration file named by `opts.file` (or `TH_CONFIG`), applies the
 * environment on top and validates. Without a file, configuration comes from the
 * environment alone. `opts.env` defaults to `process.env`.
 */
export async function loadConfig(opts: { file?: string; env?: Record<string, string | undefined> } = {}): Promise<Config> {
  const env = opts.env ?? process.env;
  const fromEnv = opts.file === undefined && env[CONFIG_FILE_ENV] ? env[CONFIG_FILE_ENV] : undefined;
  const file = opts.file ?? fromEnv;
  if (file === undefined || file === '') return parseConfig({}, env);

  const where = fromEnv ? `${file} (from ${CONFIG_FILE_ENV})` : file;
  const extension = extname(file).toLowerCase();
  if (!FILE_EXTENSIONS.includes(extension)) {
    throw new ConfigError([`${where}: has extension ${quote(extension)}; expected a file ending in ${FILE_EXTENSIONS.join(', ')}`]);
  }
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    throw new ConfigError([`${where}: cannot be read (${code}); expected a readable YAML or JSON file`]);
  }
  return parseConfig(parseFileText(text, where), env);
}
