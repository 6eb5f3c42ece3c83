/**
 * The schema as shipped for editors (config/schema.json, `token-handler config schema`):
 * the TypeBox schema as JSON, describing a configuration file. Two differences from what
 * the loader validates, both because a file is only part of the configuration: each key's
 * TH_* variable is added to its description, and a key is required in the file only when
 * no default and no variable can stand in for it (a route's prefix and upstream).
 */
import { configEnvBindings } from './env.js';
import { getAt, isRecord, isSection, setAt } from './paths.js';
import { ConfigSchema } from './schema.js';

type JsonObject = Record<string, unknown>;

/** Drops `required` where the environment may give the key, and for keys with a default. */
function relaxRequired(schema: unknown, inList: boolean): void {
  if (!isRecord(schema)) return;
  if (isSection(schema)) {
    const properties = schema.properties as Record<string, JsonObject>;
    const required = ((schema.required as string[] | undefined) ?? []).filter((key) => inList && properties[key]?.default === undefined);
    if (required.length > 0) schema.required = required;
    else delete schema.required;
    for (const child of Object.values(properties)) relaxRequired(child, inList);
  }
  relaxRequired(schema.items, true);
}

/** The JSON Schema text, ending in a newline. */
export function configJsonSchemaText(): string {
  const schema = JSON.parse(JSON.stringify(ConfigSchema)) as JsonObject;
  for (const { name, path } of configEnvBindings()) {
    const description = [...path.flatMap((segment) => ['properties', segment]), 'description'];
    setAt(schema, description, `${String(getAt(schema, description) ?? '')} Environment variable: ${name}.`.trim());
  }
  relaxRequired(schema, false);
  return `${JSON.stringify(schema, null, 2)}\n`;
}
