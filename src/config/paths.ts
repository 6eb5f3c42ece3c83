/**
 * Key paths: how a place in the configuration is named in problem lines
 * (`routes[0].prefix`), found in the schema, and read, written or removed in the data.
 */
import type { TSchema } from '@sinclair/typebox';

/** One step of a key path: an object key or a list index. */
export type Segment = string | number;
export type KeyPath = readonly Segment[];

/** `['routes', 0, 'prefix']` → `routes[0].prefix`; the root is "(configuration)". */
export function formatPath(path: KeyPath): string {
  const text = path.map((segment, i) => (typeof segment === 'number' ? `[${segment}]` : i === 0 ? segment : `.${segment}`)).join('');
  return text || '(configuration)';
}

/** An ajv instance path (`/routes/0/prefix`) → segments; list indexes become numbers. */
export function fromPointer(pointer: string, data: unknown): Segment[] {
  const path: Segment[] = [];
  let value = data;
  for (const raw of pointer.split('/').slice(1)) {
    const key = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    const segment = Array.isArray(value) ? Number(key) : key;
    path.push(segment);
    value = isRecord(value) || Array.isArray(value) ? (value as Record<string, unknown>)[segment] : undefined;
  }
  return path;
}

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !Buffer.isBuffer(value);
}

/** A section with named keys, as opposed to a map of free keys (patternProperties). */
export function isSection(schema: unknown): schema is TSchema & { properties: Record<string, TSchema> } {
  return isRecord(schema) && schema.type === 'object' && isRecord(schema.properties);
}

/** The schema of the keys of a map such as oidc.authorizationParams. */
function mapValueSchema(schema: TSchema): TSchema | undefined {
  return isRecord(schema.patternProperties) ? (Object.values(schema.patternProperties)[0] as TSchema) : undefined;
}

/** The schema describing the value at `path`, or undefined for a key the schema does not know. */
export function schemaAt(root: TSchema, path: KeyPath): TSchema | undefined {
  let schema: TSchema | undefined = root;
  for (const segment of path) {
    if (schema === undefined) return undefined;
    if (typeof segment === 'number') schema = schema.items as TSchema | undefined;
    else schema = isSection(schema) ? schema.properties[segment] : mapValueSchema(schema);
  }
  return schema;
}

/** The schemas from the root down to `path`, for annotations that hold for everything below (writeOnly). */
export function schemasAlong(root: TSchema, path: KeyPath): TSchema[] {
  return path.map((_, i) => schemaAt(root, path.slice(0, i + 1))).filter((schema): schema is TSchema => schema !== undefined);
}

export function getAt(data: unknown, path: KeyPath): unknown {
  let value = data;
  for (const segment of path) {
    if (!isRecord(value) && !Array.isArray(value)) return undefined;
    value = (value as Record<Segment, unknown>)[segment];
  }
  return value;
}

/** Sets a value, creating the sections on the way; a non-object on the way is left for validation to report. */
export function setAt(data: Record<string, unknown>, path: KeyPath, value: unknown): void {
  let parent: Record<Segment, unknown> = data;
  for (const segment of path.slice(0, -1)) {
    const child = parent[segment];
    if (child === undefined || child === null) parent[segment] = {};
    else if (!isRecord(child) && !Array.isArray(child)) return;
    parent = parent[segment] as Record<Segment, unknown>;
  }
  parent[path[path.length - 1] as Segment] = value;
}

export function deleteAt(data: unknown, path: KeyPath): void {
  const parent = getAt(data, path.slice(0, -1));
  const last = path[path.length - 1];
  if (last !== undefined && (isRecord(parent) || Array.isArray(parent))) delete (parent as Record<Segment, unknown>)[last];
}

/**
 * Every value matching a pattern such as `routes[].prefix` or `oidc.authorizationParams.*`:
 * `[]` stands for each list item, `*` for each key of a map.
 */
export function valuesAt(data: unknown, pattern: string): Array<{ path: Segment[]; value: unknown }> {
  let found: Array<{ path: Segment[]; value: unknown }> = [{ path: [], value: data }];
  for (const step of pattern.replace(/\[\]/g, '.[]').split('.')) {
    found = found.flatMap(({ path, value }) => {
      if (step === '[]') return Array.isArray(value) ? value.map((item, i) => ({ path: [...path, i], value: item })) : [];
      if (!isRecord(value)) return [];
      const keys = step === '*' ? Object.keys(value) : step in value ? [step] : [];
      return keys.map((key) => ({ path: [...path, key], value: value[key] }));
    });
  }
  return found.filter(({ value }) => value !== undefined);
}

/** Whether `path` is `ancestor` or lies below it. */
export function isWithin(path: KeyPath, ancestor: KeyPath): boolean {
  return ancestor.length <= path.length && ancestor.every((segment, i) => segment === path[i]);
}

/**
 * Removes keys the schema knows whose value is null: YAML writes "key:" with nothing after
 * it as null, which means "not set". Unknown keys stay, to be reported.
 */
export function dropNullKeys(data: unknown, schema: TSchema | undefined): void {
  if (Array.isArray(data)) {
    for (const item of data) dropNullKeys(item, schema?.items as TSchema | undefined);
    return;
  }
  if (!isRecord(data) || !isSection(schema)) return;
  for (const [key, child] of Object.entries(schema.properties)) {
    if (data[key] === null) delete data[key];
    else dropNullKeys(data[key], child);
  }
}
