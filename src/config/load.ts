/**
 * Configuration: one declarative schema (below) drives environment overrides,
 * default-filling and validation, so a key cannot be documented in one place and
 * forgotten in another. Contract: DESIGN.md "Configuration".
 *
 * Every problem is collected (not just the first) and reported as one line
 * "<key path>: <what is wrong>; <what would be valid>". Values of secret keys never
 * appear in a problem line.
 */
import { accessSync, constants as fsConstants, existsSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { extname } from 'node:path';
import { LineCounter, parseDocument } from 'yaml';
import type { Config } from './types.js';

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

// ---------------------------------------------------------------------------
// Schema vocabulary
// ---------------------------------------------------------------------------

/** The configuration as far as it has been validated; invalid values are left out. */
type DeepPartial<T> = T extends readonly (infer I)[]
  ? Array<DeepPartial<I>>
  : T extends object
    ? { [K in keyof T]?: DeepPartial<T[K]> }
    : T;
type Draft = DeepPartial<Config>;

interface LeafBase<T> {
  /** Absent stays absent: no default and not required. */
  optional?: boolean;
  /** A value, or one derived from keys validated earlier (schema order). */
  default?: T | ((draft: Draft) => T | undefined);
  /** Never echo the value (secrets, keys, URLs that may carry a password). */
  secret?: boolean;
  /** What a valid value looks like, for problem lines; each kind has its own fallback. */
  expected?: string;
}

interface StringNode extends LeafBase<string> {
  kind: 'string';
  allowEmpty?: boolean;
  pattern?: RegExp;
  /** Returns "<what is wrong>; <what would be valid>" or undefined. */
  check?(value: string): string | undefined;
  normalize?(value: string): string;
}

interface UrlNode extends LeafBase<string> {
  kind: 'url';
  /** Accepted protocols, with the colon as `URL.protocol` gives them. */
  protocols: readonly string[];
  check?(url: URL): string | undefined;
  /** Without it the value is kept exactly as given. */
  normalize?(url: URL): string;
}

interface IntNode extends LeafBase<number> {
  kind: 'int';
  min: number;
  max?: number;
}

interface BoolNode extends LeafBase<boolean> {
  kind: 'bool';
}

interface EnumNode<T extends string> extends LeafBase<T> {
  kind: 'enum';
  values: readonly T[];
}

interface StringListNode extends LeafBase<string[]> {
  kind: 'stringList';
  nonEmpty?: boolean;
  /** Rules for each item; `expected` describes one item. */
  item?: {
    expected: string;
    check?(value: string): string | undefined;
    normalize?(value: string): string;
  };
  check?(list: string[]): string | undefined;
}

interface JsonProblem {
  /** Key inside the object the problem is about, if any. */
  key?: string;
  text: string;
}

interface JsonNode<T> extends LeafBase<T> {
  kind: 'json';
  check?(value: Record<string, unknown>): JsonProblem[];
}

/**
 * A value of a shape the other kinds do not describe (e.g. true, a number or a list).
 * `parse` gives the value, or "<what is wrong>; <what would be valid>".
 */
interface CustomNode<T> extends LeafBase<T> {
  kind: 'custom';
  parse(value: unknown): { value: T } | { problem: string };
  /** Environment text → the value `parse` is given. */
  fromEnv(text: string): unknown;
}

interface ObjectNode<T> {
  kind: 'object';
  /** An absent optional object stays absent; a required one is filled from its defaults. */
  optional?: boolean;
  fields: Fields<T>;
}

interface ListNode<I> {
  kind: 'list';
  item: ObjectNode<I>;
  expected: string;
}

/**
 * The schema node a value of type T may be described by. Typing the schema against
 * `Config` makes a key missing from (or unknown to) the schema a compile error.
 */
type NodeFor<T> = CustomNode<T> | ScalarNodeFor<T>;
type ScalarNodeFor<T> = [T] extends [boolean]
  ? BoolNode
  : [T] extends [number]
    ? IntNode
    : [T] extends [string]
      ? string extends T
        ? StringNode | UrlNode
        : EnumNode<T>
      : [T] extends [readonly (infer I)[]]
        ? [I] extends [string]
          ? StringListNode
          : ListNode<I>
        : [T] extends [object]
          ? ObjectNode<T> | JsonNode<T>
          : never;

type Fields<T> = { [K in keyof T]-?: NodeFor<NonNullable<T[K]>> };

/** The same nodes with their value types erased, as the walker sees them. */
type AnyNode =
  | StringNode
  | UrlNode
  | IntNode
  | BoolNode
  | EnumNode<string>
  | StringListNode
  | JsonNode<unknown>
  | CustomNode<unknown>
  | { kind: 'object'; optional?: boolean; fields: Record<string, AnyNode> }
  | { kind: 'list'; item: { kind: 'object'; optional?: boolean; fields: Record<string, AnyNode> }; expected: string };
type AnyObjectNode = Extract<AnyNode, { kind: 'object' }>;

// ---------------------------------------------------------------------------
// Small rules used by the schema
// ---------------------------------------------------------------------------

const HTTP = ['http:', 'https:'] as const;
const RESERVED_PREFIXES = ['/auth', '/healthz', '/readyz', '/metrics'];
/** Parameters the login flow sets itself; letting config override them would break it. */
const RESERVED_AUTHORIZATION_PARAMS = [
  'client_id', 'redirect_uri', 'response_type', 'response_mode', 'scope', 'state', 'nonce',
  'code_challenge', 'code_challenge_method', 'request', 'request_uri',
];
/** RFC 9110 token characters: what a header name may consist of. */
const HEADER_TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

function quote(value: string): string {
  const shown = value.length > 80 ? `${value.slice(0, 77)}...` : value;
  return JSON.stringify(shown);
}

/** "is ..." for a value; secret values are described by their shape only. */
function describe(value: unknown, secret = false): string {
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

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !Buffer.isBuffer(value);
}

function parseUrl(value: string): URL | undefined {
  try {
    return new URL(value);
  } catch {
    return undefined;
  }
}

/** An origin like https://app.example.com[:port] with nothing after it. */
function bareOriginProblem(url: URL, what: string): string | undefined {
  if (url.username || url.password) return `carries credentials; expected ${what}`;
  if (url.pathname !== '/' || url.search || url.hash) {
    return `has ${quote(url.pathname + url.search + url.hash)} after the origin; expected ${what}`;
  }
  return undefined;
}

function routePrefixProblem(prefix: string): string | undefined {
  if (!prefix.startsWith('/')) return `is ${quote(prefix)}; a route prefix must start with "/"`;
  if (prefix.endsWith('/')) return `is ${quote(prefix)}; a route prefix must not end with "/" (e.g. /api)`;
  if (!/^(\/[A-Za-z0-9._~-]+)+$/.test(prefix)) {
    return `is ${quote(prefix)}; expected path segments of letters, digits and . _ ~ - (e.g. /api/v1)`;
  }
  const taken = RESERVED_PREFIXES.find((reserved) => prefix === reserved || prefix.startsWith(`${reserved}/`));
  if (taken) return `is ${quote(prefix)}, which token-handler serves itself; expected a prefix outside ${RESERVED_PREFIXES.join(', ')}`;
  return undefined;
}

function caFileProblem(file: string): string | undefined {
  const readable = (): boolean => {
    try {
      accessSync(file, fsConstants.R_OK);
      return statSync(file).isFile();
    } catch {
      return false;
    }
  };
  if (!existsSync(file)) return `is ${quote(file)}, which does not exist; expected a readable PEM file of CA certificates`;
  if (!readable()) return `is ${quote(file)}, which is not a readable file; expected a readable PEM file of CA certificates`;
  return undefined;
}

const scopeItem = {
  expected: 'a scope name without spaces',
  check: (scope: string): string | undefined =>
    /^[\x21\x23-\x5B\x5D-\x7E]+$/.test(scope) ? undefined : `is ${quote(scope)}; expected a scope name without spaces or quotes`,
};

const TRUST_PROXY_EXPECTED = 'false, a list of your proxies\' addresses/CIDRs such as [10.0.0.0/8] (behind a load balancer), or true';

/** An IPv4/IPv6 address, optionally with a /prefix length (what proxy-addr takes). */
function addressOrCidrProblem(item: string): string | undefined {
  const [address = '', bits, ...rest] = item.split('/');
  const family = isIP(address);
  const maxBits = family === 4 ? 32 : 128;
  const bitsOk = bits === undefined || (/^\d+$/.test(bits) && Number(bits) <= maxBits);
  return family !== 0 && bitsOk && rest.length === 0 ? undefined : `is ${quote(item)}; expected an IP address or CIDR such as 10.0.0.0/8`;
}

/** listen.trustProxy: what Fastify's trustProxy takes, short of a function. */
const trustProxyNode: CustomNode<boolean | string[]> = {
  kind: 'custom',
  default: false,
  expected: TRUST_PROXY_EXPECTED,
  parse: (value) => {
    if (typeof value === 'boolean') return { value };
    // Fastify 5 takes a hop count but trusts nothing with it: a count cannot tell the load
    // balancer from a client that connects directly and writes X-Forwarded-For itself.
    if (typeof value === 'number') {
      return {
        problem: `is ${value}, a hop count, which cannot tell your load balancer from a client that connects directly (Fastify ignores it); expected the load balancer's addresses or CIDRs, e.g. [10.0.0.0/8]`,
      };
    }
    const list = typeof value === 'string' ? value.split(',').map((item) => item.trim()).filter((item) => item !== '') : value;
    if (!Array.isArray(list) || list.length === 0 || !list.every((item) => typeof item === 'string')) {
      return { problem: `${describe(value)}; expected ${TRUST_PROXY_EXPECTED}` };
    }
    const problem = list.map((item: string) => addressOrCidrProblem(item)).find((p) => p !== undefined);
    return problem ? { problem } : { value: list as string[] };
  },
  fromEnv: (text) => {
    if (/^(true|false)$/i.test(text)) return text.toLowerCase() === 'true';
    return /^\d+$/.test(text) ? Number(text) : text;
  },
};

// ---------------------------------------------------------------------------
// The schema: the one description of every key
// ---------------------------------------------------------------------------

const routeSchema: ObjectNode<Config['routes'][number]> = {
  kind: 'object',
  fields: {
    prefix: { kind: 'string', expected: 'a path prefix such as /api', check: routePrefixProblem },
    upstream: { kind: 'url', protocols: HTTP, expected: 'an absolute http or https URL' },
    rewritePrefix: {
      kind: 'string',
      default: '',
      allowEmpty: true,
      expected: '"" or a path such as /v1',
      check: (value) =>
        value === '' || (value.startsWith('/') && !value.endsWith('/'))
          ? undefined
          : `is ${quote(value)}; expected "" (strip the prefix) or a path starting and not ending with "/" (e.g. /v1)`,
    },
    token: { kind: 'enum', values: ['user', 'client', 'none'], default: 'user' },
    anonymous: { kind: 'bool', default: false },
    retryOn401: { kind: 'bool', default: true },
    stripCookies: { kind: 'enum', values: ['own', 'all'], default: 'own' },
    clientScopes: { kind: 'stringList', default: [], item: scopeItem },
    tlsRejectUnauthorized: { kind: 'bool', default: true },
    tlsCaFile: { kind: 'string', optional: true, expected: 'the path of a PEM file', check: caFileProblem },
    connectTimeoutMs: { kind: 'int', default: 5000, min: 100, max: 120_000 },
    responseTimeoutMs: { kind: 'int', default: 30_000, min: 100, max: 3_600_000 },
    connections: { kind: 'int', default: 128, min: 1, max: 10_000 },
    keepAliveTimeoutMs: { kind: 'int', default: 4000, min: 100, max: 600_000 },
    bufferResponseBytes: { kind: 'int', default: 65_536, min: 0, max: 16_777_216 },
  },
};

const schema: ObjectNode<Config> = {
  kind: 'object',
  fields: {
    listen: {
      kind: 'object',
      fields: {
        host: { kind: 'string', default: '0.0.0.0', expected: 'a host name or IP address to listen on' },
        port: { kind: 'int', default: 8080, min: 0, max: 65535 },
        trustProxy: trustProxyNode,
      },
    },
    publicUrl: {
      kind: 'url',
      protocols: HTTP,
      expected: 'the origin the browser sees, e.g. https://app.example.com',
      // Served at the root: /auth/callback etc. are absolute paths.
      check: (url) => bareOriginProblem(url, 'a bare origin such as https://app.example.com (token-handler is served at the root)'),
      normalize: (url) => url.origin,
    },
    oidc: {
      kind: 'object',
      fields: {
        // Kept exactly as given: issuer identifiers are compared as strings (OIDC Discovery §4.3).
        issuer: {
          kind: 'url',
          protocols: HTTP,
          expected: 'the issuer URL, e.g. https://idp.example.com',
          check: (url) =>
            url.search || url.hash ? `has a query or fragment; expected an issuer URL without them` : undefined,
        },
        clientId: { kind: 'string', expected: 'the client ID registered at the provider' },
        clientSecret: { kind: 'string', optional: true, secret: true, expected: 'the client secret' },
        privateKeyJwk: {
          kind: 'json',
          optional: true,
          secret: true,
          expected: 'a private JWK as a JSON object with "kty" and "d"',
          check: (jwk) => {
            const missing = ['kty', 'd'].filter((member) => typeof jwk[member] !== 'string' || jwk[member] === '');
            return missing.length === 0
              ? []
              : [{ text: `has no ${missing.map((m) => `"${m}"`).join(' or ')}; expected a private JWK (RSA, EC or OKP) with "kty" and "d"` }];
          },
        },
        clientAuth: {
          kind: 'enum',
          values: ['client_secret_basic', 'client_secret_post', 'private_key_jwt', 'none'],
          default: 'client_secret_basic',
        },
        clientSecretBasicEncoding: { kind: 'enum', values: ['rfc6749', 'plain'], default: 'rfc6749' },
        pushedAuthorizationRequests: { kind: 'enum', values: ['auto', 'always', 'never'], default: 'auto' },
        scopes: {
          kind: 'stringList',
          default: ['openid', 'profile', 'email', 'offline_access'],
          nonEmpty: true,
          item: scopeItem,
          check: (scopes) =>
            scopes.includes('openid') ? undefined : `does not contain "openid"; expected a list including openid (this is OpenID Connect)`,
        },
        refreshSkewSeconds: { kind: 'int', default: 30, min: 0, max: 3600 },
        timeoutMs: { kind: 'int', default: 5000, min: 100, max: 120_000 },
        defaultAccessTokenSeconds: { kind: 'int', default: 300, min: 1, max: 86_400 },
        postLogoutRedirectUri: {
          kind: 'url',
          protocols: HTTP,
          default: (draft) => (draft.publicUrl === undefined ? undefined : `${draft.publicUrl}/`),
          expected: 'an absolute http or https URL',
        },
        authorizationParams: {
          kind: 'json',
          default: {},
          expected: 'an object of string values, e.g. { prompt: login }',
          check: (params) =>
            Object.entries(params).flatMap(([key, value]): JsonProblem[] => {
              if (RESERVED_AUTHORIZATION_PARAMS.includes(key)) {
                return [{ key, text: `is set by token-handler itself; remove it (scopes go in oidc.scopes)` }];
              }
              return typeof value === 'string' ? [] : [{ key, text: `${describe(value)}; expected a string` }];
            }),
        },
        allowInsecureIssuer: { kind: 'bool', default: false },
        logoutIdTokenHint: { kind: 'bool', default: false },
      },
    },
    session: {
      kind: 'object',
      fields: {
        store: { kind: 'enum', values: ['cookie', 'memory', 'redis'], default: 'cookie' },
        secrets: {
          kind: 'stringList',
          secret: true,
          nonEmpty: true,
          expected: 'a list of secrets of at least 32 characters',
          item: {
            expected: 'a secret of at least 32 characters',
            check: (secret) =>
              secret.length >= 32 ? undefined : `is ${secret.length} characters long; each secret must be at least 32 characters`,
          },
        },
        cookieName: {
          kind: 'string',
          default: 'th_session',
          pattern: /^[A-Za-z0-9_-]+$/,
          expected: 'letters, digits, "_" and "-" only',
        },
        sameSite: { kind: 'enum', values: ['strict', 'lax'], default: 'strict' },
        idleTimeoutSeconds: { kind: 'int', default: 1800, min: 60 },
        absoluteTimeoutSeconds: { kind: 'int', default: 28_800, min: 60 },
        redis: {
          kind: 'object',
          optional: true,
          fields: {
            // Secret: a Redis URL often carries a password.
            url: { kind: 'url', protocols: ['redis:', 'rediss:'], secret: true, expected: 'a redis:// or rediss:// URL' },
            keyPrefix: { kind: 'string', default: 'th:', allowEmpty: true },
            localCacheEntries: { kind: 'int', default: 10_000, min: 0, max: 1_000_000 },
          },
        },
        pendingLoginTimeoutSeconds: { kind: 'int', default: 600, min: 30, max: 3600 },
        maxPendingLogins: { kind: 'int', default: 5, min: 1, max: 20 },
        omitClaims: {
          kind: 'stringList',
          default: ['nonce', 'at_hash', 'c_hash', 's_hash'],
          item: { expected: 'a claim name, e.g. nonce' },
        },
      },
    },
    routes: { kind: 'list', item: routeSchema, expected: 'a list of routes (objects with prefix and upstream)' },
    refresh: {
      kind: 'object',
      fields: {
        resultTtlSeconds: { kind: 'int', default: 60, min: 0, max: 600 },
        resultMaxEntries: { kind: 'int', default: 10_000, min: 1 },
        replayBodyLimitBytes: { kind: 'int', default: 1_048_576, min: 0 },
        forcedMinIntervalSeconds: { kind: 'int', default: 10, min: 0, max: 3600 },
      },
    },
    csrf: {
      kind: 'object',
      fields: {
        header: {
          kind: 'string',
          default: 'x-csrf',
          pattern: HEADER_TOKEN,
          expected: 'a header name (letters, digits and -)',
          // Node lower-cases incoming header names; compare like with like.
          normalize: (header) => header.toLowerCase(),
        },
        allowedOrigins: {
          kind: 'stringList',
          default: [],
          item: {
            expected: 'an origin such as https://admin.example.com',
            check: (origin) => {
              const url = parseUrl(origin);
              if (!url || !(HTTP as readonly string[]).includes(url.protocol)) {
                return `is ${quote(origin)}; expected an origin such as https://admin.example.com`;
              }
              return bareOriginProblem(url, 'an origin such as https://admin.example.com (no path)');
            },
            // Browsers send the serialised origin; store it the same way.
            normalize: (origin) => new URL(origin).origin,
          },
        },
      },
    },
    logging: {
      kind: 'object',
      fields: {
        level: { kind: 'enum', values: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], default: 'info' },
        includeSubject: { kind: 'bool', default: false },
        batchRequestLines: { kind: 'bool', default: true },
      },
    },
    metrics: {
      kind: 'object',
      fields: {
        enabled: { kind: 'bool', default: true },
        // Never the main listener's own port by default.
        port: { kind: 'int', default: (draft) => (draft.listen?.port === 9090 ? 9091 : 9090), min: 0, max: 65535 },
        onMainListener: { kind: 'bool', default: false },
      },
    },
    limits: {
      kind: 'object',
      fields: {
        bodyLimitBytes: { kind: 'int', default: 10_485_760, min: 1024 },
        headerLimitBytes: { kind: 'int', default: 16_384, min: 1024, max: 1_048_576 },
        requestTimeoutMs: { kind: 'int', default: 60_000, min: 1000, max: 3_600_000 },
        headersTimeoutMs: { kind: 'int', default: 10_000, min: 500, max: 600_000 },
        keepAliveTimeoutMs: { kind: 'int', default: 5000, min: 100, max: 600_000 },
        connectionTimeoutMs: { kind: 'int', default: 120_000, min: 0, max: 3_600_000 },
      },
    },
    shutdown: {
      kind: 'object',
      fields: {
        gracePeriodSeconds: { kind: 'int', default: 25, min: 0, max: 600 },
      },
    },
    rateLimit: {
      kind: 'object',
      fields: {
        enabled: { kind: 'bool', default: true },
        loginPerMinute: { kind: 'int', default: 30, min: 1, max: 100_000 },
        callbackPerMinute: { kind: 'int', default: 30, min: 1, max: 100_000 },
      },
    },
  },
};

// The typed schema above is checked against Config; the walker works on the erased shape.
const rootNode: AnyObjectNode = schema;

// ---------------------------------------------------------------------------
// Environment variables
// ---------------------------------------------------------------------------

const ENV_PREFIX = 'TH_';
/** Names the config file; read by `loadConfig`, not a key. */
const CONFIG_FILE_ENV = 'TH_CONFIG';

/** `['oidc', 'clientSecret']` → `TH_OIDC_CLIENT_SECRET`. */
export function envName(path: readonly string[]): string {
  return ENV_PREFIX + path.map((segment) => segment.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase()).join('_');
}

interface EnvBinding {
  name: string;
  path: string[];
  node: Exclude<AnyNode, AnyObjectNode>;
}

/** Every leaf below an object, and every route list as a whole, gets a variable. */
function envBindings(node: AnyObjectNode, path: string[] = []): EnvBinding[] {
  return Object.entries(node.fields).flatMap(([key, child]) =>
    child.kind === 'object' ? envBindings(child, [...path, key]) : [{ name: envName([...path, key]), path: [...path, key], node: child }],
  );
}

const bindings = envBindings(rootNode);

/** Every environment variable that overrides a key, in schema order. */
export function configEnvNames(): string[] {
  return bindings.map((binding) => binding.name);
}

/** Marks a value whose problem was already reported, so it is not reported again as missing. */
const REPORTED = Symbol('already reported');

/**
 * Environment text → the value the schema expects. Text that does not parse is kept
 * as text, so validation reports it with the same wording as a bad file value.
 */
function fromEnvText(node: EnvBinding['node'], text: string): unknown {
  switch (node.kind) {
    case 'int':
      return /^[+-]?\d+$/.test(text) ? Number(text) : text;
    case 'bool':
      if (/^(true|1)$/i.test(text)) return true;
      if (/^(false|0)$/i.test(text)) return false;
      return text;
    case 'stringList':
      return text.split(',').map((item) => item.trim()).filter((item) => item !== '');
    case 'custom':
      return node.fromEnv(text);
    case 'json':
    case 'list':
      try {
        return JSON.parse(text) as unknown;
      } catch {
        return REPORTED;
      }
    default:
      return text;
  }
}

function setPath(root: Record<string, unknown>, path: readonly string[], value: unknown): Record<string, unknown> {
  const [head, ...rest] = path;
  if (head === undefined) return root;
  if (rest.length === 0) return { ...root, [head]: value };
  const child = root[head];
  if (child !== undefined && child !== null && !isRecord(child)) return root; // validation reports the wrong type
  return { ...root, [head]: setPath(isRecord(child) ? child : {}, rest, value) };
}

function levenshtein(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      current[j] = Math.min((previous[j] ?? 0) + 1, (current[j - 1] ?? 0) + 1, (previous[j - 1] ?? 0) + cost);
    }
    previous = current;
  }
  return previous[b.length] ?? 0;
}

/** The closest known name when a typo is likely, for "did you mean ...". */
function closest(name: string, known: readonly string[]): string | undefined {
  let best: { name: string; distance: number } | undefined;
  for (const candidate of known) {
    const distance = levenshtein(name.toLowerCase(), candidate.toLowerCase());
    if (!best || distance < best.distance) best = { name: candidate, distance };
  }
  return best && best.distance <= Math.max(2, Math.floor(best.name.length / 4)) ? best.name : undefined;
}

// ---------------------------------------------------------------------------
// Validation walk
// ---------------------------------------------------------------------------

interface Walk {
  problems: string[];
  /** Paths whose value came from the environment → the variable's name. */
  origins: Map<string, string>;
  /** Paths already reported, so cross-key rules do not pile on. */
  failed: Set<string>;
  draft: Draft;
}

function childPath(path: string, key: string | number): string {
  if (typeof key === 'number') return `${path}[${key}]`;
  return path ? `${path}.${key}` : key;
}

/** "listen.port (from TH_LISTEN_PORT)" when the value came from the environment. */
function label(walk: Walk, path: string): string {
  for (const [origin, variable] of walk.origins) {
    if (path === origin || path.startsWith(`${origin}.`) || path.startsWith(`${origin}[`)) return `${path} (from ${variable})`;
  }
  return path || '(configuration)';
}

function report(walk: Walk, path: string, text: string): void {
  walk.problems.push(`${label(walk, path)}: ${text}`);
  walk.failed.add(path);
}

function intExpectation(node: IntNode): string {
  return node.max === undefined ? `an integer of at least ${node.min}` : `an integer from ${node.min} to ${node.max}`;
}

function expectation(node: Exclude<AnyNode, AnyObjectNode>): string {
  if (node.expected) return node.expected;
  switch (node.kind) {
    case 'int':
      return intExpectation(node);
    case 'bool':
      return 'true or false';
    case 'enum':
      return `one of ${node.values.join(', ')}`;
    case 'url':
      return `an absolute ${node.protocols.map((p) => p.replace(':', '')).join(' or ')} URL`;
    case 'stringList':
      return 'a list of strings';
    case 'json':
      return 'a JSON object';
    case 'custom':
      return 'a valid value';
    default:
      return 'a string';
  }
}

/** Returns the validated value, or undefined after reporting why there is none. */
function walkNode(walk: Walk, node: AnyNode, input: unknown, path: string): unknown {
  if (input === REPORTED) {
    walk.failed.add(path);
    return undefined;
  }
  // YAML writes "key:" with nothing after it as null: treat it as not set.
  const value = input === null ? undefined : input;
  if (node.kind === 'object') return walkObject(walk, node, value, path);
  if (node.kind === 'list') return walkList(walk, node, value, path);

  if (value === undefined) {
    const fallback = typeof node.default === 'function' ? node.default(walk.draft) : node.default;
    if (fallback !== undefined || node.optional || typeof node.default === 'function') return fallback;
    // Route keys have no variable of their own (TH_ROUTES sets the whole list).
    const variable = path.includes('[') ? '' : ` (in the file or as ${envName(path.split('.'))})`;
    report(walk, path, `is missing; expected ${expectation(node)}${variable}`);
    return undefined;
  }
  return walkLeaf(walk, node, value, path);
}

function walkObject(walk: Walk, node: AnyObjectNode, value: unknown, path: string): Record<string, unknown> | undefined {
  if (value === undefined && node.optional) return undefined;
  const known = Object.keys(node.fields);
  if (value !== undefined && !isRecord(value)) {
    report(walk, path, `${describe(value)}; expected a mapping with keys ${known.join(', ')}`);
    return undefined;
  }
  const input = value ?? {};
  // Built in place so derived defaults see the keys validated before them.
  const out: Record<string, unknown> = path === '' ? (walk.draft as Record<string, unknown>) : {};
  for (const [key, child] of Object.entries(node.fields)) {
    const result = walkNode(walk, child, input[key], childPath(path, key));
    if (result !== undefined) out[key] = result;
  }
  for (const key of Object.keys(input).filter((k) => !known.includes(k))) {
    const guess = closest(key, known);
    const hint = guess ? ` (did you mean ${guess}?)` : '';
    report(walk, childPath(path, key), `is not a known key${hint}; known keys here: ${known.join(', ')}`);
  }
  return out;
}

function walkList(walk: Walk, node: Extract<AnyNode, { kind: 'list' }>, value: unknown, path: string): unknown[] | undefined {
  if (value === undefined) return [];
  if (!Array.isArray(value)) {
    report(walk, path, `${describe(value)}; expected ${node.expected}`);
    return undefined;
  }
  return value.map((item, index) => {
    const itemPath = childPath(path, index);
    if (!isRecord(item)) {
      report(walk, itemPath, `${describe(item)}; expected a mapping with keys ${Object.keys(node.item.fields).join(', ')}`);
      return {};
    }
    return walkObject(walk, node.item, item, itemPath) ?? {};
  });
}

function walkLeaf(walk: Walk, node: Exclude<AnyNode, AnyObjectNode | { kind: 'list' }>, value: unknown, path: string): unknown {
  const fail = (text: string): undefined => {
    report(walk, path, text);
    return undefined;
  };
  const wrongType = (): undefined => fail(`${describe(value, node.secret)}; expected ${expectation(node)}`);

  switch (node.kind) {
    case 'int':
      if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < node.min || (node.max !== undefined && value > node.max)) {
        return fail(`${describe(value, node.secret)}; expected ${intExpectation(node)}`);
      }
      return value;
    case 'bool':
      return typeof value === 'boolean' ? value : wrongType();
    case 'enum':
      return typeof value === 'string' && node.values.includes(value) ? value : wrongType();
    case 'string': {
      if (typeof value !== 'string') return wrongType();
      if (value === '' && !node.allowEmpty) return fail(`is empty; expected ${expectation(node)}`);
      if (node.pattern && !node.pattern.test(value)) return wrongType();
      const problem = node.check?.(value);
      if (problem) return fail(problem);
      return node.normalize ? node.normalize(value) : value;
    }
    case 'url': {
      if (typeof value !== 'string') return wrongType();
      const url = parseUrl(value);
      if (!url || !node.protocols.includes(url.protocol)) {
        if (!node.secret) return fail(`${describe(value)}; expected ${expectation(node)}`);
        // The scheme is safe to show; the rest may hold a password.
        const shape = url ? `has scheme ${quote(url.protocol)}` : 'is not a URL';
        return fail(`${shape} (value not shown); expected ${expectation(node)}`);
      }
      const problem = node.check?.(url);
      if (problem) return fail(problem);
      return node.normalize ? node.normalize(url) : value;
    }
    case 'stringList':
      return walkStringList(walk, node, value, path);
    case 'custom': {
      const parsed = node.parse(value);
      return 'problem' in parsed ? fail(parsed.problem) : parsed.value;
    }
    case 'json': {
      if (!isRecord(value)) return wrongType();
      const problems = node.check?.(value) ?? [];
      for (const problem of problems) report(walk, problem.key === undefined ? path : childPath(path, problem.key), problem.text);
      return problems.length === 0 ? value : undefined;
    }
  }
}

function stringItemProblem(node: StringListNode, item: unknown): string | undefined {
  const expected = node.item?.expected ?? 'a string';
  if (typeof item !== 'string') return `${describe(item, node.secret)}; expected ${expected}`;
  if (item === '') return `is empty; expected ${expected}`;
  return node.item?.check?.(item);
}

function walkStringList(walk: Walk, node: StringListNode, value: unknown, path: string): string[] | undefined {
  if (!Array.isArray(value)) {
    report(walk, path, `${describe(value, node.secret)}; expected ${expectation(node)}`);
    return undefined;
  }
  if (node.nonEmpty && value.length === 0) {
    report(walk, path, `is an empty list; expected ${expectation(node)}`);
    return undefined;
  }
  let valid = true;
  const items = value.map((item: unknown, index): string => {
    const problem = stringItemProblem(node, item);
    if (problem !== undefined || typeof item !== 'string') {
      report(walk, childPath(path, index), problem ?? 'is not a string');
      valid = false;
      return '';
    }
    return node.item?.normalize ? node.item.normalize(item) : item;
  });
  if (!valid) return undefined;
  const problem = node.check?.(items);
  if (problem) {
    report(walk, path, problem);
    return undefined;
  }
  return items;
}

// ---------------------------------------------------------------------------
// Rules that span several keys
// ---------------------------------------------------------------------------

type CrossRule = (draft: Draft, walk: Walk) => void;

/** Absent from the input, as opposed to present but already reported as invalid. */
function absent(walk: Walk, path: string, value: unknown): boolean {
  return value === undefined && !walk.failed.has(path);
}

const LOOPBACK_HOSTS = ['localhost', '127.0.0.1', '[::1]'];

const crossRules: CrossRule[] = [
  function insecureIssuer(draft, walk) {
    const oidc = draft.oidc;
    const url = oidc?.issuer === undefined ? undefined : parseUrl(oidc.issuer);
    if (!oidc || url?.protocol !== 'http:') return;
    // A local provider in development and tests is the one case plain http is normal.
    if (LOOPBACK_HOSTS.includes(url.hostname)) {
      oidc.allowInsecureIssuer = true;
    } else if (oidc.allowInsecureIssuer === false) {
      report(walk, 'oidc.issuer', `is ${quote(oidc.issuer ?? '')}, plain http; expected https (http only on localhost or with oidc.allowInsecureIssuer: true)`);
    }
  },

  function clientCredentials(draft, walk) {
    const oidc = draft.oidc;
    if (!oidc) return;
    switch (oidc.clientAuth) {
      case 'client_secret_basic':
      case 'client_secret_post':
        if (absent(walk, 'oidc.clientSecret', oidc.clientSecret)) {
          report(walk, 'oidc.clientSecret', `is missing; required when oidc.clientAuth is ${oidc.clientAuth}`);
        }
        break;
      case 'private_key_jwt':
        if (absent(walk, 'oidc.privateKeyJwk', oidc.privateKeyJwk)) {
          report(walk, 'oidc.privateKeyJwk', 'is missing; required when oidc.clientAuth is private_key_jwt (a private JWK with "kty" and "d")');
        }
        break;
      case 'none':
        if (oidc.clientSecret !== undefined) {
          report(walk, 'oidc.clientSecret', 'is set; a public client (oidc.clientAuth: none) must not have one — remove it or choose client_secret_basic');
        }
        break;
    }
  },

  function sessionTimeouts(draft, walk) {
    const { idleTimeoutSeconds: idle, absoluteTimeoutSeconds: absolute } = draft.session ?? {};
    if (idle !== undefined && absolute !== undefined && absolute < idle) {
      report(walk, 'session.absoluteTimeoutSeconds', `is ${absolute}; expected at least session.idleTimeoutSeconds (${idle})`);
    }
  },

  function redisStore(draft, walk) {
    const session = draft.session;
    if (session?.store === 'redis' && absent(walk, 'session.redis.url', session.redis?.url) && !walk.failed.has('session.redis')) {
      report(walk, 'session.redis.url', 'is missing; required when session.store is redis (e.g. redis://127.0.0.1:6379)');
    }
  },

  function distinctPrefixes(draft, walk) {
    const seen = new Map<string, number>();
    (draft.routes ?? []).forEach((route, index) => {
      if (route.prefix === undefined) return;
      const first = seen.get(route.prefix);
      if (first === undefined) {
        seen.set(route.prefix, index);
      } else {
        report(walk, `routes[${index}].prefix`, `is ${quote(route.prefix)}, the same as routes[${first}].prefix; each route needs its own prefix`);
      }
    });
  },

  function anonymousRoutes(draft, walk) {
    (draft.routes ?? []).forEach((route, index) => {
      if (route.anonymous === true && route.token === 'user') {
        report(walk, `routes[${index}].anonymous`, 'is true but token is user; only token: client and token: none routes can let callers without a session through');
      }
    });
  },

  function upstreamBasePath(draft, walk) {
    (draft.routes ?? []).forEach((route, index) => {
      const url = route.upstream === undefined ? undefined : parseUrl(route.upstream);
      if (!url) return;
      if (url.search || url.hash) {
        report(walk, `routes[${index}].upstream`, `has a query or fragment; expected a base URL such as http://api:8080 or http://api:8080/base`);
        return;
      }
      // The upstream's path is a base that rewritePrefix is appended to. One that repeats it
      // most likely meant the path once (earlier versions took rewritePrefix alone): say so.
      const base = url.pathname.replace(/\/+$/, '');
      const rewrite = route.rewritePrefix;
      if (base !== '' && rewrite !== undefined && (rewrite === base || rewrite.startsWith(`${base}/`))) {
        report(
          walk,
          `routes[${index}].rewritePrefix`,
          `is ${quote(rewrite)}, which repeats the upstream's path ${quote(base)}: it is appended to that path (${route.prefix ?? '/prefix'}/x would go to ${base}${rewrite}/x); expected "" or only what comes after ${quote(base)}`,
        );
      }
    });
  },

  function serverTimeouts(draft, walk) {
    const { requestTimeoutMs: request, headersTimeoutMs: headers } = draft.limits ?? {};
    if (request !== undefined && headers !== undefined && headers > request) {
      report(walk, 'limits.headersTimeoutMs', `is ${headers}; expected at most limits.requestTimeoutMs (${request})`);
    }
  },

  function metricsPort(draft, walk) {
    const { enabled, port, onMainListener } = draft.metrics ?? {};
    if (enabled && !onMainListener && port !== undefined && port !== 0 && port === draft.listen?.port) {
      report(walk, 'metrics.port', `is ${port}, the same as listen.port; expected another port, or metrics.onMainListener: true to serve /metrics on the main listener`);
    }
  },

  function clientTokenRoutes(draft, walk) {
    if (draft.oidc?.clientAuth !== 'none') return;
    (draft.routes ?? []).forEach((route, index) => {
      if (route.token === 'client') {
        report(walk, `routes[${index}].token`, 'is "client" but oidc.clientAuth is none; client-credentials tokens need a confidential client (client_secret_basic, client_secret_post or private_key_jwt)');
      }
    });
  },
];

// ---------------------------------------------------------------------------
// Entry points
// ---------------------------------------------------------------------------

/**
 * Validates raw configuration (a parsed file, or `{}`) with environment overrides
 * on top, fills defaults, and returns a complete `Config`.
 * Throws `ConfigError` listing every problem found.
 */
export function parseConfig(raw: unknown, env: Record<string, string | undefined> = {}): Config {
  const walk: Walk = { problems: [], origins: new Map(), failed: new Set(), draft: {} };
  const input = raw === null || raw === undefined ? {} : raw;
  if (!isRecord(input)) {
    throw new ConfigError([`(configuration): ${describe(input)}; expected a mapping with keys ${Object.keys(rootNode.fields).join(', ')}`]);
  }

  let merged: Record<string, unknown> = input;
  for (const binding of bindings) {
    // Empty counts as unset: `FOO=` in compose files and shells usually means "not given".
    const text = env[binding.name]?.trim();
    if (text === undefined || text === '') continue;
    const path = binding.path.join('.');
    const value = fromEnvText(binding.node, text);
    walk.origins.set(path, binding.name);
    if (value === REPORTED) {
      report(walk, path, `is not valid JSON; expected ${expectation(binding.node)}`);
    }
    merged = setPath(merged, binding.path, value);
  }

  const knownNames = [CONFIG_FILE_ENV, ...configEnvNames()];
  for (const name of Object.keys(env).filter((n) => n.startsWith(ENV_PREFIX) && !knownNames.includes(n))) {
    const guess = closest(name, knownNames);
    walk.problems.push(`${name}: is not a known variable${guess ? ` (did you mean ${guess}?)` : ''}; every key's variable is TH_ + its path in UPPER_SNAKE_CASE, e.g. TH_OIDC_CLIENT_SECRET`);
  }

  walkObject(walk, rootNode, merged, '');
  for (const rule of crossRules) rule(walk.draft, walk);

  if (walk.problems.length > 0) throw new ConfigError(walk.problems);
  // Every key was validated against the schema, which is typed against Config.
  return walk.draft as Config;
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
