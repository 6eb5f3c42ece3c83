/**
 * Problem lines: every problem is collected (not just the first) and reported as one line
 * "<key path>: <what is wrong>; <what would be valid>", in the order the keys appear in
 * the schema. Values of secret keys (`writeOnly` in the schema) never appear in a line.
 */
import type { TSchema } from '@sinclair/typebox';
import type { ErrorObject } from 'ajv';
import { fromPointer, getAt, isRecord, isSection, isWithin, schemaAt, schemasAlong, formatPath, type KeyPath, type Segment } from './paths.js';
import { didYouMean } from './suggest.js';

export class ConfigError extends Error {
  /** One line per problem: "<key path>: <what is wrong>; <what would be valid>". */
  readonly problems: string[];

  constructor(problems: string[]) {
    // The message is the problem lines themselves, so printing it is enough.
    super(problems.join('\n'));
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

export function quote(value: string): string {
  const shown = value.length > 80 ? `${value.slice(0, 77)}...` : value;
  return JSON.stringify(shown);
}

/** "is ..." for a value; secret values are described by their shape only. */
export function describe(value: unknown, secret = false): string {
  if (value === undefined || value === null) return 'is missing';
  if (Array.isArray(value)) return 'is a list';
  switch (typeof value) {
    case 'string':
      return secret ? `is a string of ${value.length} characters (not shown)` : `is ${quote(value)}`;
    case 'number':
    case 'boolean':
      return secret ? `is a ${typeof value}` : `is ${String(value)}`;
    case 'object':
      return 'is an object';
    default:
      return `is a ${typeof value}`;
  }
}

/** What a valid value of this schema looks like, for the part after "expected". */
export function expectation(schema: TSchema | undefined): string {
  if (schema === undefined) return 'a valid value';
  if (typeof schema['x-expected'] === 'string') return schema['x-expected'];
  if (Array.isArray(schema.enum)) return `one of ${schema.enum.join(', ')}`;
  if (isSection(schema)) return `a mapping with keys ${Object.keys(schema.properties).join(', ')}`;
  switch (schema.type) {
    case 'integer': {
      const { minimum, maximum } = schema as TSchema & { minimum: number; maximum?: number };
      return maximum === undefined ? `an integer of at least ${minimum}` : `an integer from ${minimum} to ${maximum}`;
    }
    case 'boolean':
      return 'true or false';
    case 'array':
      return 'a list of strings';
    case 'object':
      return 'a JSON object';
    default:
      return 'a string';
  }
}

/** Secret when the key or any key above it is `writeOnly` (a list of secrets hides its items too). */
export function isSecret(root: TSchema, path: KeyPath): boolean {
  return schemasAlong(root, path).some((schema) => schema.writeOnly === true);
}

interface Located {
  path: Segment[];
  text: string;
}

/**
 * The problems of one configuration, with what is needed to word and order them: which
 * keys came from which variable, and which keys already failed (so later steps do not
 * pile on).
 */
export class ProblemList {
  /** Environment problems, reported first in the order found. */
  private readonly early: string[] = [];
  /** Problems of single keys, reported in schema order. */
  private readonly keyed: Located[] = [];
  /** Problems across keys, reported last in the order found. */
  private readonly crossKey: Located[] = [];
  private readonly failed: Segment[][] = [];
  private readonly origins: Array<{ path: KeyPath; variable: string }> = [];

  constructor(readonly root: TSchema) {}

  /** Marks keys that came from an environment variable, so their lines name it. */
  setOrigin(path: KeyPath, variable: string): void {
    this.origins.push({ path, variable });
  }

  /** A problem with an environment variable that is not about a key's value. */
  addEnvironmentLine(line: string): void {
    this.early.push(line);
  }

  addEnvironment(path: KeyPath, text: string): void {
    this.early.push(`${this.label(path)}: ${text}`);
    this.failed.push([...path]);
  }

  add(path: KeyPath, text: string): void {
    this.keyed.push({ path: [...path], text });
    this.failed.push([...path]);
  }

  addCrossKey(path: KeyPath, text: string): void {
    this.crossKey.push({ path: [...path], text });
    this.failed.push([...path]);
  }

  /** Whether this exact key was reported. */
  hasFailed(path: KeyPath): boolean {
    return this.failed.some((failed) => failed.length === path.length && isWithin(path, failed));
  }

  /** Whether this key or one above it was reported. */
  failedAtOrAbove(path: KeyPath): boolean {
    return this.failed.some((failed) => isWithin(path, failed));
  }

  /** Whether a key below this one was reported. */
  failedBelow(path: KeyPath): boolean {
    return this.failed.some((failed) => failed.length > path.length && isWithin(failed, path));
  }

  /** Every key reported so far. */
  failedPaths(): readonly KeyPath[] {
    return this.failed;
  }

  get size(): number {
    return this.early.length + this.keyed.length + this.crossKey.length;
  }

  /** The lines, in order; `data` gives the order of keys the schema does not name. */
  lines(data: unknown): string[] {
    const order = (path: KeyPath): number[] => orderKey(this.root, data, path);
    const keyed = this.keyed
      .map((problem) => ({ problem, key: order(problem.path) }))
      .sort((a, b) => compareKeys(a.key, b.key))
      .map(({ problem }) => problem);
    return [...this.early, ...[...keyed, ...this.crossKey].map(({ path, text }) => `${this.label(path)}: ${text}`)];
  }

  /** "listen.port (from TH_LISTEN_PORT)" when the value came from the environment. */
  private label(path: KeyPath): string {
    const origin = this.origins.find((o) => isWithin(path, o.path));
    return origin ? `${formatPath(path)} (from ${origin.variable})` : formatPath(path);
  }
}

/** Schema keys by their position in the schema; other keys after them, in the order written. */
function orderKey(root: TSchema, data: unknown, path: KeyPath): number[] {
  return path.map((segment, i) => {
    if (typeof segment === 'number') return segment;
    const schema = schemaAt(root, path.slice(0, i));
    const known = isSection(schema) ? Object.keys(schema.properties).indexOf(segment) : -1;
    if (known >= 0) return known;
    const parent = getAt(data, path.slice(0, i));
    return 1_000_000 + (isRecord(parent) ? Object.keys(parent).indexOf(segment) : 0);
  });
}

function compareKeys(a: number[], b: number[]): number {
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    if (a[i] !== b[i]) return (a[i] ?? 0) - (b[i] ?? 0);
  }
  return a.length - b.length;
}

/** The key an ajv error is about: the missing or unknown key itself, not its parent. */
function errorPath(error: ErrorObject, data: unknown): Segment[] {
  const path = fromPointer(error.instancePath, data);
  if (error.keyword === 'required') return [...path, (error.params as { missingProperty: string }).missingProperty];
  if (error.keyword === 'additionalProperties') return [...path, (error.params as { additionalProperty: string }).additionalProperty];
  return path;
}

/** Route keys have no variable of their own (TH_ROUTES sets the whole list). */
function whereToSet(path: KeyPath, envName: (path: readonly string[]) => string): string {
  return path.some((segment) => typeof segment === 'number') ? '' : ` (in the file or as ${envName(path as string[])})`;
}

/** One line for the errors ajv found at one key, worded from the schema rather than from ajv. */
function wordSchemaError(root: TSchema, error: ErrorObject, path: KeyPath, data: unknown, envName: (path: readonly string[]) => string): string {
  const schema = schemaAt(root, path);
  if (error.keyword === 'additionalProperties') {
    const parent = schemaAt(root, path.slice(0, -1));
    const known = isSection(parent) ? Object.keys(parent.properties) : [];
    return `is not a known key${didYouMean(String(path[path.length - 1]), known)}; known keys here: ${known.join(', ')}`;
  }
  if (error.keyword === 'required') return `is missing; expected ${expectation(schema)}${whereToSet(path, envName)}`;
  const value = getAt(data, path);
  if (value === '' && error.keyword === 'minLength') return `is empty; expected ${expectation(schema)}`;
  if (Array.isArray(value) && value.length === 0 && error.keyword === 'minItems') return `is an empty list; expected ${expectation(schema)}`;
  return `${describe(value, isSecret(root, path))}; expected ${expectation(schema)}`;
}

/**
 * Turns ajv's errors into problems: one per key (ajv may find several things wrong with
 * one value), none for keys already reported or below them, no "missing" for `skipMissing`.
 */
export function addSchemaErrors(
  problems: ProblemList,
  errors: readonly ErrorObject[],
  data: unknown,
  options: { skipMissing: readonly KeyPath[]; envName: (path: readonly string[]) => string },
): void {
  for (const error of errors) {
    const path = errorPath(error, data);
    if (problems.failedAtOrAbove(path)) continue;
    if (error.keyword === 'required' && options.skipMissing.some((skip) => isWithin(path, skip) && skip.length === path.length)) continue;
    problems.add(path, wordSchemaError(problems.root, error, path, data, options.envName));
  }
}
