/**
 * The schema compiled by ajv, the JSON Schema validator Fastify itself uses. It checks
 * types, limits and unknown keys, and fills defaults in place (`useDefaults`). It does
 * not coerce types: environment text is converted by env.ts, and "8080" in a file stays
 * a string that is refused.
 */
import { Ajv, type ErrorObject } from 'ajv';
import { ConfigSchema } from './schema.js';

const ajv = new Ajv({ allErrors: true, useDefaults: true, strict: true });
// Our annotation for problem lines (schema.ts); a keyword ajv must know, not check.
ajv.addKeyword({ keyword: 'x-expected', schemaType: 'string' });

const validateConfig = ajv.compile(ConfigSchema);

/** Validates `data`, filling defaults in place; returns what is wrong, in ajv's words. */
export function schemaErrors(data: unknown): readonly ErrorObject[] {
  return validateConfig(data) ? [] : (validateConfig.errors ?? []);
}
