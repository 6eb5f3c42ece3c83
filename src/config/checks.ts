/**
 * What the schema cannot say about a single key: URLs as the runtime parses them (WHATWG
 * `URL`, not JSON Schema's `format: uri`, which disagrees on edge cases), files that must
 * exist, route prefixes, JWKs — and the canonical form some values are stored in.
 * A key's check runs before ajv and its problem line wins over ajv's for that key, so a
 * check may assume nothing about the value's type: when the type is wrong it says nothing
 * and lets the schema report it.
 */
import { accessSync, constants as fsConstants, existsSync, statSync } from 'node:fs';
import { isIP } from 'node:net';
import { join, resolve } from 'node:path';
import { readDpopKeyFile } from '../oidc/dpop.js';
import { safeReturnTo } from '../routes/return-to.js';
import { splitList } from './env.js';
import { isRecord, schemaAt, setAt, valuesAt, type KeyPath } from './paths.js';
import { describe, expectation, isSecret, quote, type ProblemList } from './problems.js';
import { ConfigSchema } from './schema.js';
import { PER_APP_KEYS } from './apps.js';

/** What the schema says about the key being checked. */
interface KeyFacts {
  /** The key's own name (for a map such as oidc.authorizationParams, the parameter). */
  name: string;
  expected: string;
  secret: boolean;
}

interface KeyCheck {
  /** Which keys: a path where `[]` stands for each list item and `*` for each key of a map. */
  keys: string;
  /** "<what is wrong>; <what would be valid>", or undefined when there is nothing to add to the schema. */
  problem?(value: unknown, key: KeyFacts): string | undefined;
  /** The value as it is stored, for a value without a problem. */
  normalize?(value: unknown): unknown;
}

const HTTP = ['http:', 'https:'];
export const RESERVED_PREFIXES = ['/auth', '/healthz', '/readyz', '/metrics'];
/** The prefix of the frontend route, the catch-all that serves the SPA. */
export const FRONTEND_PREFIX = '/';
/** Parameters the login flow sets itself; letting config override them would break it. */
const RESERVED_AUTHORIZATION_PARAMS = [
  'client_id', 'redirect_uri', 'response_type', 'response_mode', 'scope', 'state', 'nonce',
  'code_challenge', 'code_challenge_method', 'request', 'request_uri',
];

export function parseUrl(value: string): URL | undefined {
  try {
    return new URL(value);
  } catch {
    return undefined;
  }
}

/** A non-empty string, the only kind of value most checks have anything to say about. */
function isText(value: unknown): value is string {
  return typeof value === 'string' && value !== '';
}

function isTextList(value: unknown): value is string[] {
  return Array.isArray(value) && value.length > 0 && value.every(isText);
}

/** An absolute URL with one of `protocols`; a secret URL is described by its scheme only, as it may hold a password. */
function urlCheck(protocols: readonly string[], more?: (url: URL) => string | undefined): KeyCheck['problem'] {
  return (value, key) => {
    if (typeof value !== 'string') return undefined;
    const url = parseUrl(value);
    if (!url || !protocols.includes(url.protocol)) {
      if (!key.secret) return `${describe(value)}; expected ${key.expected}`;
      const shape = url ? `has scheme ${quote(url.protocol)}` : 'is not a URL';
      return `${shape} (value not shown); expected ${key.expected}`;
    }
    return more?.(url);
  };
}

/** An origin like https://app.example.com[:port] with nothing after it. */
function bareOriginProblem(url: URL, what: string): string | undefined {
  if (url.username || url.password) return `carries credentials; expected ${what}`;
  if (url.pathname !== '/' || url.search || url.hash) {
    return `has ${quote(url.pathname + url.search + url.hash)} after the origin; expected ${what}`;
  }
  return undefined;
}

/** Browsers send the serialised origin; store it the same way. */
function toOrigin(value: unknown): unknown {
  const url = typeof value === 'string' ? parseUrl(value) : undefined;
  return url ? url.origin : value;
}

function routePrefixProblem(prefix: unknown): string | undefined {
  if (!isText(prefix) || prefix === FRONTEND_PREFIX) return undefined;
  if (!prefix.startsWith('/')) return `is ${quote(prefix)}; a route prefix must start with "/"`;
  if (prefix.endsWith('/')) return `is ${quote(prefix)}; a route prefix must not end with "/" (e.g. /api)`;
  if (!/^(\/[A-Za-z0-9._~-]+)+$/.test(prefix)) {
    return `is ${quote(prefix)}; expected path segments of letters, digits and . _ ~ - (e.g. /api/v1)`;
  }
  const taken = RESERVED_PREFIXES.find((reserved) => prefix === reserved || prefix.startsWith(`${reserved}/`));
  if (taken) return `is ${quote(prefix)}, which token-handler serves itself; expected a prefix outside ${RESERVED_PREFIXES.join(', ')}`;
  return undefined;
}

function caFileProblem(file: unknown): string | undefined {
  if (!isText(file)) return undefined;
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

/** oidc.dpopKeyFile: a readable file with one private key DPoP proofs can be signed with. */
function dpopKeyFileProblem(file: unknown): string | undefined {
  if (!isText(file)) return undefined;
  if (!existsSync(file) || !statSync(file).isFile()) return `is ${quote(file)}, which is not a file; expected a private key file (a JWK as JSON, or PEM)`;
  try {
    readDpopKeyFile(file);
    return undefined;
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'EACCES' || code === 'EISDIR') return `is ${quote(file)}, which is not a readable file; expected a private key file (a JWK as JSON, or PEM)`;
    return `is ${quote(file)}, which ${err instanceof Error ? err.message : 'holds no usable key'}`;
  }
}

/** routes[].static: a directory holding the SPA's index.html. */
function staticDirectoryProblem(dir: unknown): string | undefined {
  if (!isText(dir)) return undefined;
  const expected = "expected the directory of the SPA's build, with index.html (relative paths start at the working directory)";
  if (!existsSync(dir) || !statSync(dir).isDirectory()) return `is ${quote(dir)}, which is not a directory; ${expected}`;
  if (!existsSync(join(dir, 'index.html'))) return `is ${quote(dir)}, which has no index.html; ${expected}`;
  return undefined;
}

/** errors.pagePath: a path on this origin (what safeReturnTo keeps as it is), outside token-handler's own. */
function pagePathProblem(path: unknown): string | undefined {
  if (!isText(path)) return undefined;
  if (safeReturnTo(path) !== path) return `is ${quote(path)}; expected a path on this origin such as /error`;
  const taken = RESERVED_PREFIXES.find((reserved) => path === reserved || path.startsWith(`${reserved}/`) || path.startsWith(`${reserved}?`));
  if (taken) return `is ${quote(path)}, which token-handler serves itself; expected a path of the SPA such as /error`;
  return undefined;
}

/** A Redis node: host:port, the host a name or an address ([::1] for IPv6). */
function hostPortProblem(node: unknown): string | undefined {
  if (!isText(node)) return undefined;
  const match = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(\d{1,5})$/.exec(node);
  return match && Number(match[2]) >= 1 && Number(match[2]) <= 65535 ? undefined : `is ${quote(node)}; expected host:port, e.g. redis-1.internal:26379`;
}

function scopeProblem(scope: unknown): string | undefined {
  if (!isText(scope)) return undefined;
  return /^[\x21\x23-\x5B\x5D-\x7E]+$/.test(scope) ? undefined : `is ${quote(scope)}; expected a scope name without spaces or quotes`;
}

/** An IPv4/IPv6 address, optionally with a /prefix length (what proxy-addr takes). */
function addressOrCidrProblem(item: string): string | undefined {
  const [address = '', bits, ...rest] = item.split('/');
  const family = isIP(address);
  const maxBits = family === 4 ? 32 : 128;
  const bitsOk = bits === undefined || (/^\d+$/.test(bits) && Number(bits) <= maxBits);
  return family !== 0 && bitsOk && rest.length === 0 ? undefined : `is ${quote(item)}; expected an IP address or CIDR such as 10.0.0.0/8`;
}

/** listen.trustProxy: what Fastify's trustProxy takes, short of a function; a string is a comma-separated list. */
function trustProxyProblem(value: unknown, key: KeyFacts): string | undefined {
  if (typeof value === 'boolean') return undefined;
  // Fastify 5 takes a hop count but trusts nothing with it: a count cannot tell the load
  // balancer from a client that connects directly and writes X-Forwarded-For itself.
  if (typeof value === 'number') {
    return `is ${value}, a hop count, which cannot tell your load balancer from a client that connects directly (Fastify ignores it); expected the load balancer's addresses or CIDRs, e.g. [10.0.0.0/8]`;
  }
  const list = typeof value === 'string' ? splitList(value) : value;
  if (!Array.isArray(list) || list.length === 0 || !list.every((item) => typeof item === 'string')) return `${describe(value)}; expected ${key.expected}`;
  return list.map((item: string) => addressOrCidrProblem(item)).find((problem) => problem !== undefined);
}

/** In table order: checks of list items come before checks of the list, which skip a list with a bad item. */
const keyChecks: KeyCheck[] = [
  { keys: 'listen.trustProxy', problem: trustProxyProblem, normalize: (value) => (typeof value === 'string' ? splitList(value) : value) },
  {
    keys: 'publicUrl',
    // Served at the root: /auth/callback etc. are absolute paths.
    problem: urlCheck(HTTP, (url) => bareOriginProblem(url, 'a bare origin such as https://app.example.com (token-handler is served at the root)')),
    normalize: toOrigin,
  },
  {
    // Kept exactly as given: issuer identifiers are compared as strings (OIDC Discovery §4.3).
    keys: 'oidc.issuer',
    problem: urlCheck(HTTP, (url) => (url.search || url.hash ? 'has a query or fragment; expected an issuer URL without them' : undefined)),
  },
  {
    keys: 'oidc.privateKeyJwk',
    problem: (jwk) => {
      if (!isRecord(jwk)) return undefined;
      const missing = ['kty', 'd'].filter((member) => !isText(jwk[member]));
      return missing.length === 0
        ? undefined
        : `has no ${missing.map((m) => `"${m}"`).join(' or ')}; expected a private JWK (RSA, EC or OKP) with "kty" and "d"`;
    },
  },
  { keys: 'oidc.dpopKeyFile', problem: dpopKeyFileProblem },
  { keys: 'oidc.scopes[]', problem: scopeProblem },
  {
    keys: 'oidc.scopes',
    problem: (scopes) =>
      isTextList(scopes) && !scopes.includes('openid')
        ? 'does not contain "openid"; expected a list including openid (this is OpenID Connect)'
        : undefined,
  },
  { keys: 'oidc.postLogoutRedirectUri', problem: urlCheck(HTTP) },
  {
    keys: 'oidc.authorizationParams.*',
    problem: (_value, key) => (RESERVED_AUTHORIZATION_PARAMS.includes(key.name) ? 'is set by token-handler itself; remove it (scopes go in oidc.scopes)' : undefined),
  },
  {
    keys: 'session.secrets[]',
    problem: (secret) => (isText(secret) && secret.length < 32 ? `is ${secret.length} characters long; each secret must be at least 32 characters` : undefined),
  },
  { keys: 'session.redis.url', problem: urlCheck(['redis:', 'rediss:']) },
  { keys: 'session.redis.sentinel.nodes[]', problem: hostPortProblem },
  { keys: 'session.redis.cluster.nodes[]', problem: hostPortProblem },
  { keys: 'session.redis.tls.caFile', problem: caFileProblem },
  { keys: 'routes[].prefix', problem: routePrefixProblem },
  { keys: 'routes[].upstream', problem: urlCheck(HTTP) },
  // @fastify/static wants an absolute root; relative to the working directory, like tlsCaFile.
  { keys: 'routes[].static', problem: staticDirectoryProblem, normalize: (value) => (typeof value === 'string' ? resolve(value) : value) },
  { keys: 'errors.pagePath', problem: pagePathProblem },
  {
    keys: 'routes[].rewritePrefix',
    problem: (value) =>
      typeof value !== 'string' || value === '' || (value.startsWith('/') && !value.endsWith('/'))
        ? undefined
        : `is ${quote(value)}; expected "" (strip the prefix) or a path starting and not ending with "/" (e.g. /v1)`,
  },
  { keys: 'routes[].clientScopes[]', problem: scopeProblem },
  { keys: 'routes[].identityHeaders.*', problem: (_value, key) => identityHeaderProblem(key.name) },
  { keys: 'routes[].tlsCaFile', problem: caFileProblem },
  // Node lower-cases incoming header names; compare like with like.
  { keys: 'csrf.header', normalize: (value) => (typeof value === 'string' ? value.toLowerCase() : value) },
  {
    keys: 'csrf.allowedOrigins[]',
    problem: (origin) => {
      if (!isText(origin)) return undefined;
      const url = parseUrl(origin);
      if (!url || !HTTP.includes(url.protocol)) return `is ${quote(origin)}; expected an origin such as https://admin.example.com`;
      return bareOriginProblem(url, 'an origin such as https://admin.example.com (no path)');
    },
    normalize: toOrigin,
  },
];

/** apps[].match.pathPrefix: like a route prefix, never "/" (that is the whole host: leave it out). */
function appPathPrefixProblem(prefix: unknown): string | undefined {
  if (!isText(prefix)) return undefined;
  if (prefix === FRONTEND_PREFIX) return 'is "/", the whole host; leave pathPrefix out for that, or give a prefix such as /partners';
  return routePrefixProblem(prefix);
}

/**
 * Every check of a key an app has too (publicUrl, oidc, session, csrf, errors, routes) also
 * runs on `apps[].<key>`; then the app's own keys.
 */
const allKeyChecks: KeyCheck[] = [
  ...keyChecks,
  ...keyChecks.filter((check) => PER_APP_KEYS.includes(check.keys.split(/[.[]/, 1)[0]!) && !check.keys.startsWith('session.redis')).map((check) => ({ ...check, keys: `apps[].${check.keys}` })),
  { keys: 'apps[].match.pathPrefix', problem: appPathPrefixProblem },
  // Host headers are compared lower-case.
  { keys: 'apps[].match.host', normalize: (value) => (typeof value === 'string' ? value.toLowerCase() : value) },
];

/** Headers token-handler (or HTTP itself) owns: an identity header cannot be one of them. */
const OWN_HEADERS = new Set([
  'authorization', 'cookie', 'host', 'content-length', 'content-type', 'transfer-encoding', 'connection', 'x-request-id',
  'traceparent', 'tracestate', 'forwarded', 'x-real-ip', 'proxy-authorization', 'te', 'upgrade', 'expect', 'dpop',
]);

function identityHeaderProblem(name: string): string | undefined {
  if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name)) return 'is not a header name; expected letters, digits and - (e.g. X-User-Sub)';
  const lower = name.toLowerCase();
  if (OWN_HEADERS.has(lower) || lower.startsWith('x-forwarded-')) {
    return 'is a header token-handler or HTTP sets itself; expected a header of your own, e.g. X-User-Sub';
  }
  return undefined;
}

/**
 * Runs every key check on `data`, reporting problems and storing normalised values in
 * place. Keys already reported (e.g. unreadable JSON in a variable) are left alone.
 */
export function runKeyChecks(data: Record<string, unknown>, problems: ProblemList): void {
  for (const check of allKeyChecks) {
    for (const { path, value } of valuesAt(data, check.keys)) {
      if (problems.failedAtOrAbove(path) || problems.failedBelow(path)) continue;
      const problem = check.problem?.(value, keyFacts(path));
      if (problem !== undefined) problems.add(path, problem);
      else if (check.normalize) setAt(data, path, check.normalize(value));
    }
  }
}

function keyFacts(path: KeyPath): KeyFacts {
  return { expected: expectation(schemaAt(ConfigSchema, path)), secret: isSecret(ConfigSchema, path), name: String(path[path.length - 1]) };
}
