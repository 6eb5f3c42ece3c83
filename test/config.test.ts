import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { Ajv } from 'ajv';
import { parse, stringify } from 'yaml';
import { ConfigError, configEnvNames, envName, loadConfig, parseConfig, type Config } from '../src/config/index.js';
import { appsOf } from '../src/config/apps.js';

const SECRET = 'a-session-secret-that-is-long-enough-0123456789';
const EXAMPLE = fileURLToPath(new URL('../config/example.yaml', import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), 'th-config-test-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** The smallest valid input: everything else has a default. */
function minimal(): Record<string, unknown> {
  return {
    publicUrl: 'https://app.example.com',
    oidc: { issuer: 'https://idp.example.com', clientId: 'bff', clientSecret: 'client-secret' },
    session: { secrets: [SECRET] },
  };
}

/** `minimal()` with one section replaced or extended. */
function withSection(section: string, value: unknown): Record<string, unknown> {
  const base = minimal();
  const current = base[section];
  base[section] = typeof current === 'object' && current !== null && !Array.isArray(value) ? { ...current, ...(value as object) } : value;
  return base;
}

/** The problem lines of a configuration expected to be refused. */
function problemsOf(run: () => unknown): string[] {
  try {
    run();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as ConfigError).problems;
  }
  throw new Error('expected a ConfigError, but the configuration was accepted');
}

async function problemsOfAsync(run: () => Promise<unknown>): Promise<string[]> {
  const err: unknown = await run().then(
    () => new Error('expected a ConfigError, but the configuration was accepted'),
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ConfigError);
  return (err as ConfigError).problems;
}

function writeTemp(name: string, text: string): string {
  const file = join(tmp, name);
  writeFileSync(file, text);
  return file;
}

describe('defaults', () => {
  it('a minimal configuration gets every other key filled with its default', () => {
    const config = parseConfig(minimal());
    expect(config).toEqual<Config>({
      listen: { host: '0.0.0.0', port: 8080, trustProxy: false },
      publicUrl: 'https://app.example.com',
      oidc: {
        issuer: 'https://idp.example.com',
        clientId: 'bff',
        clientSecret: 'client-secret',
        clientAuth: 'client_secret_basic',
        clientSecretBasicEncoding: 'rfc6749',
        pushedAuthorizationRequests: 'auto',
        scopes: ['openid', 'profile', 'email', 'offline_access'],
        refreshSkewSeconds: 30,
        timeoutMs: 5000,
        defaultAccessTokenSeconds: 300,
        postLogoutRedirectUri: 'https://app.example.com/',
        authorizationParams: {},
        allowedAcrValues: [],
        allowInsecureIssuer: false,
        logoutIdTokenHint: false,
        dpop: false,
      },
      session: {
        store: 'cookie',
        secrets: [SECRET],
        cookieName: 'th_session',
        sameSite: 'strict',
        idleTimeoutSeconds: 1800,
        absoluteTimeoutSeconds: 28800,
        pendingLoginTimeoutSeconds: 600,
        maxPendingLogins: 5,
      omitClaims: ['nonce', 'at_hash', 'c_hash', 's_hash'],
      maxEventStreams: 5,
      maxWebSockets: 20,
      },
      routes: [],
      refresh: { resultTtlSeconds: 60, resultMaxEntries: 10000, replayBodyLimitBytes: 1048576, forcedMinIntervalSeconds: 10 },
      csrf: { header: 'x-csrf', allowedOrigins: [] },
      logging: { level: 'info', includeSubject: false, batchRequestLines: true },
      metrics: { enabled: true, port: 9090, onMainListener: false },
      limits: {
        bodyLimitBytes: 10485760,
        headerLimitBytes: 16384,
        requestTimeoutMs: 60000,
        headersTimeoutMs: 10000,
        keepAliveTimeoutMs: 5000,
        connectionTimeoutMs: 120000,
      },
      shutdown: { gracePeriodSeconds: 25 },
      rateLimit: { enabled: true, loginPerMinute: 30, callbackPerMinute: 30 },
      admin: {},
      errors: {},
    });
  });

  it('a route gets its defaults', () => {
    const config = parseConfig(withSection('routes', [{ prefix: '/api', upstream: 'http://127.0.0.1:9500' }]));
    expect(config.routes).toEqual([
      {
        prefix: '/api',
        upstream: 'http://127.0.0.1:9500',
        rewritePrefix: '',
        token: 'user',
        anonymous: false,
        retryOn401: true,
        stripCookies: 'own',
        clientScopes: [],
        tlsRejectUnauthorized: true,
        connectTimeoutMs: 5000,
        responseTimeoutMs: 30000,
        connections: 128,
        keepAliveTimeoutMs: 4000,
        identityHeaders: {},
        bufferResponseBytes: 65536,
        websocket: false,
        closeOnTokenExpiry: false,
        websocketMaxMessageBytes: 1048576,
        websocketPingSeconds: 30,
        dpop: false,
      },
    ]);
  });

  it('the post-logout redirect defaults to the root of the public URL', () => {
    const config = parseConfig({ ...minimal(), publicUrl: 'http://localhost:3000/' });
    expect(config.oidc.postLogoutRedirectUri).toBe('http://localhost:3000/');
  });

  it('a redis block gets its default key prefix', () => {
    const config = parseConfig(withSection('session', { store: 'redis', redis: { url: 'redis://127.0.0.1:6379' } }));
    expect(config.session.redis).toEqual({ url: 'redis://127.0.0.1:6379', keyPrefix: 'th:', localCacheEntries: 20_000 });
  });

  it('a key written with no value (YAML null) takes its default', () => {
    const config = parseConfig(withSection('csrf', { header: null, allowedOrigins: null }));
    expect(config.csrf).toEqual({ header: 'x-csrf', allowedOrigins: [] });
  });
});

describe('problem reporting', () => {
  it('every problem is reported, one line each', () => {
    const problems = problemsOf(() =>
      parseConfig({
        listen: { port: 70000 },
        publicUrl: 'not a url',
        oidc: { issuer: 'https://idp.example.com', clientId: '', clientAuth: 'foo' },
        session: { secrets: [SECRET], sameSite: 'none' },
        logging: { level: 'verbose' },
      }),
    );
    expect(problems).toEqual(
      expect.arrayContaining([
        'listen.port: is 70000; expected an integer from 0 to 65535',
        'publicUrl: is "not a url"; expected the origin the browser sees, e.g. https://app.example.com',
        'oidc.clientId: is empty; expected the client ID registered at the provider',
        'oidc.clientAuth: is "foo"; expected one of client_secret_basic, client_secret_post, private_key_jwt, none',
        'session.sameSite: is "none"; expected one of strict, lax',
        'logging.level: is "verbose"; expected one of fatal, error, warn, info, debug, trace, silent',
      ]),
    );
    expect(problems).toHaveLength(6);
    for (const line of problems) expect(line).not.toContain('\n');
  });

  it('the error message is the problem lines, ready to print', () => {
    let error: unknown;
    try {
      parseConfig({});
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const configError = error as ConfigError;
    expect(configError.message).toBe(configError.problems.join('\n'));
    expect(configError.name).toBe('ConfigError');
  });

  it('required keys that are missing name their environment variable too', () => {
    expect(problemsOf(() => parseConfig({}))).toEqual([
      'publicUrl: is missing; expected the origin the browser sees, e.g. https://app.example.com (in the file or as TH_PUBLIC_URL)',
      'oidc.issuer: is missing; expected the issuer URL, e.g. https://idp.example.com (in the file or as TH_OIDC_ISSUER)',
      'oidc.clientId: is missing; expected the client ID registered at the provider (in the file or as TH_OIDC_CLIENT_ID)',
      'session.secrets: is missing; expected a list of secrets of at least 32 characters (in the file or as TH_SESSION_SECRETS)',
      'oidc.clientSecret: is missing; required when oidc.clientAuth is client_secret_basic',
    ]);
  });

  it('unknown keys are reported with the known ones', () => {
    const problems = problemsOf(() => parseConfig({ ...withSection('listen', { prot: 8080 }), sesion: {} }));
    expect(problems).toEqual([
      'listen.prot: is not a known key (did you mean port?); known keys here: host, port, trustProxy',
      'sesion: is not a known key (did you mean session?); known keys here: listen, publicUrl, oidc, session, routes, refresh, csrf, logging, metrics, limits, shutdown, rateLimit, admin, errors, apps',
    ]);
  });

  it('a value of the wrong shape is reported with what was expected', () => {
    const problems = problemsOf(() => parseConfig({ ...minimal(), listen: 'localhost:8080', routes: { prefix: '/api' } }));
    expect(problems).toEqual([
      'listen: is "localhost:8080"; expected a mapping with keys host, port, trustProxy',
      'routes: is an object; expected a list of routes (objects with prefix and upstream)',
    ]);
  });

  it('a configuration that is not a mapping is refused', () => {
    expect(problemsOf(() => parseConfig(['publicUrl']))[0]).toMatch(/^\(configuration\): is a list; expected a mapping/);
  });
});

describe('secrets never appear in problem lines', () => {
  it('a secret shorter than 32 characters is refused without echoing it', () => {
    const problems = problemsOf(() => parseConfig(withSection('session', { secrets: [SECRET, 'short-but-secret'] })));
    expect(problems).toEqual(['session.secrets[1]: is 16 characters long; each secret must be at least 32 characters']);
  });

  it('an empty list of secrets is refused', () => {
    expect(problemsOf(() => parseConfig(withSection('session', { secrets: [] })))).toEqual([
      'session.secrets: is an empty list; expected a list of secrets of at least 32 characters',
    ]);
  });

  it('secret-bearing keys are described by shape, never by value', () => {
    const leaked = 'hunter2-do-not-print';
    const problems = problemsOf(() =>
      parseConfig(
        {
          ...minimal(),
          oidc: { issuer: 'https://idp.example.com', clientId: 'bff', clientAuth: 'none', clientSecret: leaked, privateKeyJwk: { kty: 'EC', x: leaked } },
          session: { secrets: leaked, store: 'redis', redis: { url: `http://user:${leaked}@redis.internal` } },
        },
        { TH_SESSION_REDIS_KEY_PREFIX: 'x:', TH_OIDC_AUTHORIZATION_PARAMS: `{"${leaked}` },
      ),
    );
    expect(problems.length).toBeGreaterThanOrEqual(4);
    for (const line of problems) expect(line).not.toContain('hunter2');
    expect(problems).toContain('session.secrets: is a string of 20 characters (not shown); expected a list of secrets of at least 32 characters');
  });
});

describe('environment overrides', () => {
  it('an environment variable overrides the file value', () => {
    const config = parseConfig(withSection('listen', { port: 8080 }), { TH_LISTEN_PORT: '9090', TH_OIDC_CLIENT_SECRET: 'from-env' });
    expect(config.listen.port).toBe(9090);
    expect(config.oidc.clientSecret).toBe('from-env');
  });

  it('variable names are TH_ and the key path in UPPER_SNAKE_CASE', () => {
    expect(envName(['oidc', 'clientSecret'])).toBe('TH_OIDC_CLIENT_SECRET');
    expect(envName(['session', 'redis', 'url'])).toBe('TH_SESSION_REDIS_URL');
    expect(envName(['oidc', 'privateKeyJwk'])).toBe('TH_OIDC_PRIVATE_KEY_JWK');
    const names = configEnvNames();
    expect(names).toEqual(expect.arrayContaining(['TH_LISTEN_PORT', 'TH_SESSION_SECRETS', 'TH_OIDC_AUTHORIZATION_PARAMS', 'TH_ROUTES']));
    expect(new Set(names).size).toBe(names.length);
  });

  it('configuration can come from the environment alone', async () => {
    const config = await loadConfig({
      env: {
        TH_PUBLIC_URL: 'https://app.example.com',
        TH_OIDC_ISSUER: 'https://idp.example.com',
        TH_OIDC_CLIENT_ID: 'bff',
        TH_OIDC_CLIENT_AUTH: 'none',
        TH_SESSION_SECRETS: SECRET,
      },
    });
    expect(config.oidc.clientAuth).toBe('none');
    expect(config.session.secrets).toEqual([SECRET]);
  });

  it('a non-number in an integer variable is reported naming the variable', () => {
    expect(problemsOf(() => parseConfig(minimal(), { TH_LISTEN_PORT: 'abc' }))).toEqual([
      'listen.port (from TH_LISTEN_PORT): is "abc"; expected an integer from 0 to 65535',
    ]);
  });

  it('list variables are comma-separated, trimmed, with empty items dropped', () => {
    const config = parseConfig(minimal(), {
      TH_SESSION_SECRETS: ` ${SECRET} ,, ${SECRET.toUpperCase()},`,
      TH_OIDC_SCOPES: 'openid, email',
    });
    expect(config.session.secrets).toEqual([SECRET, SECRET.toUpperCase()]);
    expect(config.oidc.scopes).toEqual(['openid', 'email']);
  });

  it('boolean variables accept true, false, 1 and 0', () => {
    expect(parseConfig(minimal(), { TH_LOGGING_INCLUDE_SUBJECT: 'true' }).logging.includeSubject).toBe(true);
    expect(parseConfig(minimal(), { TH_LOGGING_INCLUDE_SUBJECT: '1' }).logging.includeSubject).toBe(true);
    expect(parseConfig(minimal(), { TH_OIDC_ALLOW_INSECURE_ISSUER: '0' }).oidc.allowInsecureIssuer).toBe(false);
    expect(problemsOf(() => parseConfig(minimal(), { TH_LOGGING_INCLUDE_SUBJECT: 'yes' }))).toEqual([
      'logging.includeSubject (from TH_LOGGING_INCLUDE_SUBJECT): is "yes"; expected true or false',
    ]);
  });

  it('JSON keys and the route list take JSON text', () => {
    const config = parseConfig(minimal(), {
      TH_OIDC_CLIENT_AUTH: 'private_key_jwt',
      TH_OIDC_CLIENT_SECRET: '',
      TH_OIDC_PRIVATE_KEY_JWK: '{"kty":"EC","crv":"P-256","x":"x","y":"y","d":"d"}',
      TH_OIDC_AUTHORIZATION_PARAMS: '{"prompt":"login"}',
      TH_ROUTES: '[{"prefix":"/api","upstream":"https://api.internal"}]',
    });
    expect(config.oidc.privateKeyJwk).toMatchObject({ kty: 'EC', d: 'd' });
    expect(config.oidc.authorizationParams).toEqual({ prompt: 'login' });
    expect(config.routes.map((r) => r.prefix)).toEqual(['/api']);
  });

  it('invalid JSON in a variable is reported naming the variable', () => {
    expect(problemsOf(() => parseConfig(minimal(), { TH_ROUTES: '[{"prefix": "/api",' }))).toEqual([
      'routes (from TH_ROUTES): is not valid JSON; expected a list of routes (objects with prefix and upstream)',
    ]);
  });

  it('problems inside a value from a variable name the variable', () => {
    expect(problemsOf(() => parseConfig(minimal(), { TH_ROUTES: '[{"prefix": "/api/"}]' }))).toEqual([
      'routes[0].prefix (from TH_ROUTES): is "/api/"; a route prefix must not end with "/" (e.g. /api)',
      'routes[0].upstream (from TH_ROUTES): is missing; expected an absolute http or https URL',
    ]);
  });

  it('redis variables create the redis block when the file has none', () => {
    const config = parseConfig(minimal(), { TH_SESSION_STORE: 'redis', TH_SESSION_REDIS_URL: 'rediss://cache.internal:6380' });
    expect(config.session.redis).toEqual({ url: 'rediss://cache.internal:6380', keyPrefix: 'th:', localCacheEntries: 20_000 });
  });

  it('an empty variable counts as unset', () => {
    expect(parseConfig(withSection('listen', { port: 1234 }), { TH_LISTEN_PORT: '' }).listen.port).toBe(1234);
  });

  it('an unknown TH_ variable is reported with the closest known name', () => {
    expect(problemsOf(() => parseConfig(minimal(), { TH_SESSION_SECRET: SECRET, HOME: '/root' }))).toEqual([
      "TH_SESSION_SECRET: is not a known variable (did you mean TH_SESSION_SECRETS?); every key's variable is TH_ + its path in UPPER_SNAKE_CASE, e.g. TH_OIDC_CLIENT_SECRET",
    ]);
  });
});

describe('public URL and provider', () => {
  it('the public URL is stored as its origin without a trailing slash', () => {
    expect(parseConfig({ ...minimal(), publicUrl: 'HTTPS://App.Example.com:443/' }).publicUrl).toBe('https://app.example.com');
  });

  it('a public URL with a path is refused: token-handler is served at the root', () => {
    expect(problemsOf(() => parseConfig({ ...minimal(), publicUrl: 'https://app.example.com/bff' }))).toEqual([
      'publicUrl: has "/bff" after the origin; expected a bare origin such as https://app.example.com (token-handler is served at the root)',
    ]);
  });

  it('the issuer is kept exactly as written', () => {
    const issuer = 'https://idp.example.com/realms/main/';
    expect(parseConfig(withSection('oidc', { issuer })).oidc.issuer).toBe(issuer);
  });

  it('a plain-http issuer is refused unless explicitly allowed', () => {
    expect(problemsOf(() => parseConfig(withSection('oidc', { issuer: 'http://idp.example.com' })))).toEqual([
      'oidc.issuer: is "http://idp.example.com", plain http; expected https (http only on localhost or with oidc.allowInsecureIssuer: true)',
    ]);
    const allowed = parseConfig(withSection('oidc', { issuer: 'http://idp.example.com', allowInsecureIssuer: true }));
    expect(allowed.oidc.allowInsecureIssuer).toBe(true);
  });

  it('a plain-http issuer on a loopback host is allowed and marked insecure', () => {
    for (const issuer of ['http://localhost:9000', 'http://127.0.0.1:9000/oidc', 'http://[::1]:9000']) {
      expect(parseConfig(withSection('oidc', { issuer })).oidc.allowInsecureIssuer).toBe(true);
    }
  });

  it('a client secret is required for client_secret_basic and client_secret_post', () => {
    const oidc = { issuer: 'https://idp.example.com', clientId: 'bff', clientAuth: 'client_secret_post' };
    expect(problemsOf(() => parseConfig({ ...minimal(), oidc }))).toEqual([
      'oidc.clientSecret: is missing; required when oidc.clientAuth is client_secret_post',
    ]);
  });

  it('a short client secret is accepted: the provider decides its length', () => {
    expect(parseConfig(withSection('oidc', { clientSecret: 'abc' })).oidc.clientSecret).toBe('abc');
  });

  it('a public client must not have a client secret', () => {
    expect(problemsOf(() => parseConfig(withSection('oidc', { clientAuth: 'none' })))).toEqual([
      'oidc.clientSecret: is set; a public client (oidc.clientAuth: none) must not have one — remove it or choose client_secret_basic',
    ]);
  });

  it('private_key_jwt needs a private JWK with kty and d', () => {
    const oidc = { issuer: 'https://idp.example.com', clientId: 'bff', clientAuth: 'private_key_jwt' };
    expect(problemsOf(() => parseConfig({ ...minimal(), oidc }))).toEqual([
      'oidc.privateKeyJwk: is missing; required when oidc.clientAuth is private_key_jwt (a private JWK with "kty" and "d")',
    ]);
    expect(problemsOf(() => parseConfig({ ...minimal(), oidc: { ...oidc, privateKeyJwk: { kty: 'EC', x: 'public-only' } } }))).toEqual([
      'oidc.privateKeyJwk: has no "d"; expected a private JWK (RSA, EC or OKP) with "kty" and "d"',
    ]);
  });

  it('scopes must include openid', () => {
    expect(problemsOf(() => parseConfig(withSection('oidc', { scopes: ['profile'] })))).toEqual([
      'oidc.scopes: does not contain "openid"; expected a list including openid (this is OpenID Connect)',
    ]);
  });

  it('authorization parameters must be strings and must not override the login flow', () => {
    const problems = problemsOf(() => parseConfig(withSection('oidc', { authorizationParams: { prompt: 'login', max_age: 60, state: 'x' } })));
    expect(problems).toEqual([
      'oidc.authorizationParams.max_age: is 60; expected a string',
      'oidc.authorizationParams.state: is set by token-handler itself; remove it (scopes go in oidc.scopes)',
    ]);
  });

  it('a dpop: true route needs oidc.dpop, a token and no WebSocket', () => {
    const api = { upstream: 'http://127.0.0.1:9500', dpop: true };
    expect(problemsOf(() => parseConfig(withSection('routes', [{ prefix: '/api', ...api }])))).toEqual([
      'routes[0].dpop: is true but oidc.dpop is false; DPoP toward an upstream needs DPoP-bound tokens: set oidc.dpop: true',
    ]);
    const config = withSection('oidc', { dpop: true });
    config.routes = [
      { prefix: '/open', ...api, token: 'none' },
      { prefix: '/live', ...api, websocket: true },
    ];
    expect(problemsOf(() => parseConfig(config))).toEqual([
      'routes[0].dpop: is true but token is none; a DPoP proof goes with a token: set token (user, client or exchange), or dpop: false',
      'routes[1].websocket: is true on a dpop: true route; WebSocket upgrades are not sent with DPoP proofs: serve the socket from a route of its own (dpop: false) or drop websocket',
    ]);
    config.routes = [{ prefix: '/api', ...api }];
    expect(parseConfig(config).routes[0]?.dpop).toBe(true);
  });

  it('oidc.dpopKeyFile must hold a P-256, P-384 or Ed25519 private key, and needs oidc.dpop', () => {
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    const jwkFile = writeTemp('dpop-key.json', JSON.stringify(ec.export({ format: 'jwk' })));
    const pemFile = writeTemp('dpop-key.pem', generateKeyPairSync('ed25519').privateKey.export({ format: 'pem', type: 'pkcs8' }).toString());
    const rsaFile = writeTemp('dpop-rsa.pem', generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'pem', type: 'pkcs8' }).toString());
    const publicFile = writeTemp('dpop-public.json', JSON.stringify(generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'jwk' })));
    expect(parseConfig(withSection('oidc', { dpop: true, dpopKeyFile: jwkFile })).oidc.dpopKeyFile).toBe(jwkFile);
    expect(parseConfig(withSection('oidc', { dpop: true, dpopKeyFile: pemFile })).oidc.dpopKeyFile).toBe(pemFile);
    expect(problemsOf(() => parseConfig(withSection('oidc', { dpop: true, dpopKeyFile: rsaFile })))).toEqual([
      `oidc.dpopKeyFile: is "${rsaFile}", which is an RSA key; expected a P-256 (ES256), P-384 (ES384) or Ed25519 (EdDSA) private key`,
    ]);
    expect(problemsOf(() => parseConfig(withSection('oidc', { dpop: true, dpopKeyFile: publicFile })))).toEqual([
      `oidc.dpopKeyFile: is "${publicFile}", which holds no private key; expected a private JWK (JSON with "d") or a PEM private key (P-256, P-384 or Ed25519)`,
    ]);
    expect(problemsOf(() => parseConfig(withSection('oidc', { dpop: true, dpopKeyFile: join(tmp, 'missing.pem') })))).toEqual([
      `oidc.dpopKeyFile: is "${join(tmp, 'missing.pem')}", which is not a file; expected a private key file (a JWK as JSON, or PEM)`,
    ]);
    expect(problemsOf(() => parseConfig(withSection('oidc', { dpopKeyFile: jwkFile })))).toEqual([
      'oidc.dpopKeyFile: is set but oidc.dpop is false; set oidc.dpop: true to bind tokens with this key, or remove dpopKeyFile',
    ]);
  });

  it('numeric limits are enforced', () => {
    const problems = problemsOf(() => parseConfig(withSection('oidc', { timeoutMs: 50, refreshSkewSeconds: 1.5 })));
    expect(problems).toEqual([
      'oidc.refreshSkewSeconds: is 1.5; expected an integer from 0 to 3600',
      'oidc.timeoutMs: is 50; expected an integer from 100 to 120000',
    ]);
  });
});

describe('session', () => {
  it('the redis store needs a redis URL', () => {
    expect(problemsOf(() => parseConfig(withSection('session', { store: 'redis' })))).toEqual([
      'session.redis.url: is missing; required when session.store is redis (e.g. redis://127.0.0.1:6379), or session.redis.sentinel or session.redis.cluster',
    ]);
  });

  it('the redis URL must be redis:// or rediss://', () => {
    expect(problemsOf(() => parseConfig(withSection('session', { redis: { url: 'http://cache:6379' } })))).toEqual([
      'session.redis.url: has scheme "http:" (value not shown); expected a redis:// or rediss:// URL',
    ]);
  });

  it('an absolute timeout shorter than the idle timeout is refused', () => {
    expect(problemsOf(() => parseConfig(withSection('session', { idleTimeoutSeconds: 3600, absoluteTimeoutSeconds: 600 })))).toEqual([
      'session.absoluteTimeoutSeconds: is 600; expected at least session.idleTimeoutSeconds (3600)',
    ]);
  });

  it('a cookie name may only hold letters, digits, "_" and "-"', () => {
    expect(problemsOf(() => parseConfig(withSection('session', { cookieName: 'my session' })))).toEqual([
      'session.cookieName: is "my session"; expected letters, digits, "_" and "-" only',
    ]);
  });
});

describe('routes', () => {
  const route = (extra: Record<string, unknown>): Record<string, unknown> => ({ prefix: '/api', upstream: 'http://127.0.0.1:9500', ...extra });

  it('a route prefix must start with "/" and must not end with "/"', () => {
    expect(problemsOf(() => parseConfig(withSection('routes', [route({ prefix: 'api' }), route({ prefix: '/v2/' })])))).toEqual([
      'routes[0].prefix: is "api"; a route prefix must start with "/"',
      'routes[1].prefix: is "/v2/"; a route prefix must not end with "/" (e.g. /api)',
    ]);
  });

  it('routes cannot take over /auth, /healthz, /readyz or /metrics', () => {
    const prefixes = ['/auth', '/auth/extra', '/healthz', '/readyz', '/metrics'];
    const problems = problemsOf(() => parseConfig(withSection('routes', prefixes.map((prefix) => route({ prefix })))));
    expect(problems).toHaveLength(prefixes.length);
    for (const line of problems) expect(line).toMatch(/^routes\[\d\]\.prefix: is "[^"]+", which token-handler serves itself/);
    expect(parseConfig(withSection('routes', [route({ prefix: '/authors' })])).routes[0]?.prefix).toBe('/authors');
  });

  it('two routes with the same prefix are refused, naming both', () => {
    expect(problemsOf(() => parseConfig(withSection('routes', [route({}), route({ upstream: 'http://other' })])))).toEqual([
      'routes[1].prefix: is "/api", the same as routes[0].prefix; each route needs its own prefix',
    ]);
  });

  it('an upstream must be an absolute http or https URL', () => {
    expect(problemsOf(() => parseConfig(withSection('routes', [route({ upstream: '127.0.0.1:9500' })])))).toEqual([
      'routes[0].upstream: is "127.0.0.1:9500"; expected an absolute http or https URL',
    ]);
  });

  it('token, stripCookies and rewritePrefix take only their listed values', () => {
    const problems = problemsOf(() => parseConfig(withSection('routes', [route({ token: 'bearer', stripCookies: 'none', rewritePrefix: 'v1' })])));
    expect(problems).toEqual([
      'routes[0].rewritePrefix: is "v1"; expected "" (strip the prefix) or a path starting and not ending with "/" (e.g. /v1)',
      'routes[0].token: is "bearer"; expected one of user, client, exchange, none',
      'routes[0].stripCookies: is "none"; expected one of own, all',
    ]);
  });

  it('a CA file must exist', () => {
    const caFile = writeTemp('ca.pem', '-----BEGIN CERTIFICATE-----\n');
    expect(parseConfig(withSection('routes', [route({ tlsCaFile: caFile })])).routes[0]?.tlsCaFile).toBe(caFile);
    const missing = join(tmp, 'missing.pem');
    expect(problemsOf(() => parseConfig(withSection('routes', [route({ tlsCaFile: missing })])))).toEqual([
      `routes[0].tlsCaFile: is ${JSON.stringify(missing)}, which does not exist; expected a readable PEM file of CA certificates`,
    ]);
  });

  it('client-token routes need a confidential client', () => {
    const raw = { ...minimal(), oidc: { issuer: 'https://idp.example.com', clientId: 'bff', clientAuth: 'none' }, routes: [route({ token: 'client' })] };
    expect(problemsOf(() => parseConfig(raw))).toEqual([
      'routes[0].token: is "client" but oidc.clientAuth is none; client-credentials tokens need a confidential client (client_secret_basic, client_secret_post or private_key_jwt)',
    ]);
  });
});

describe('csrf', () => {
  it('the CSRF header name is stored lower-case', () => {
    expect(parseConfig(withSection('csrf', { header: 'X-Requested-By' })).csrf.header).toBe('x-requested-by');
  });

  it('allowed origins are stored normalised and must not carry a path', () => {
    expect(parseConfig(withSection('csrf', { allowedOrigins: ['HTTPS://Admin.Example.com:443/'] })).csrf.allowedOrigins).toEqual([
      'https://admin.example.com',
    ]);
    expect(problemsOf(() => parseConfig(withSection('csrf', { allowedOrigins: ['https://admin.example.com/app', '*'] })))).toEqual([
      'csrf.allowedOrigins[0]: has "/app" after the origin; expected an origin such as https://admin.example.com (no path)',
      'csrf.allowedOrigins[1]: is "*"; expected an origin such as https://admin.example.com',
    ]);
  });
});

describe('proxy hardening keys', () => {
  it('listen.trustProxy takes true, false or a list of addresses and CIDRs, also from TH_LISTEN_TRUST_PROXY', () => {
    expect(parseConfig(withSection('listen', { trustProxy: ['10.0.0.0/8', '127.0.0.1'] })).listen.trustProxy).toEqual(['10.0.0.0/8', '127.0.0.1']);
    expect(parseConfig(withSection('listen', { trustProxy: '10.0.0.0/8, ::1' })).listen.trustProxy).toEqual(['10.0.0.0/8', '::1']);
    expect(parseConfig(minimal(), { TH_LISTEN_TRUST_PROXY: 'true' }).listen.trustProxy).toBe(true);
    expect(parseConfig(minimal(), { TH_LISTEN_TRUST_PROXY: 'false' }).listen.trustProxy).toBe(false);
    expect(parseConfig(minimal(), { TH_LISTEN_TRUST_PROXY: '10.0.0.0/8,127.0.0.1' }).listen.trustProxy).toEqual(['10.0.0.0/8', '127.0.0.1']);
    expect(problemsOf(() => parseConfig(withSection('listen', { trustProxy: ['10.0.0.0/33'] })))).toEqual([
      'listen.trustProxy: is "10.0.0.0/33"; expected an IP address or CIDR such as 10.0.0.0/8',
    ]);
    // Fastify 5 ignores hop counts (they cannot tell the balancer from a direct client): refused, not silently useless.
    expect(problemsOf(() => parseConfig(minimal(), { TH_LISTEN_TRUST_PROXY: '2' }))[0]).toMatch(/^listen\.trustProxy \(from TH_LISTEN_TRUST_PROXY\): is 2, a hop count/);
    expect(problemsOf(() => parseConfig(minimal(), { TH_LISTEN_TRUST_PROXY: 'yes' }))).toEqual([
      'listen.trustProxy (from TH_LISTEN_TRUST_PROXY): is "yes"; expected an IP address or CIDR such as 10.0.0.0/8',
    ]);
  });

  it('anonymous is refused on token: user routes', () => {
    expect(problemsOf(() => parseConfig(withSection('routes', [{ prefix: '/api', upstream: 'http://127.0.0.1:9500', anonymous: true }])))).toEqual([
      'routes[0].anonymous: is true but token is user; only token: client and token: none routes can let callers without a session through',
    ]);
  });

  it('per-API tokens: resource only with token user, exchange only (and always) with token exchange', () => {
    const api = { upstream: 'http://127.0.0.1:9500' };
    const ok = parseConfig(
      withSection('routes', [
        { prefix: '/orders', ...api, resource: 'https://orders.example' },
        { prefix: '/billing', ...api, token: 'exchange', exchange: { audience: 'billing', scope: 'billing:read' } },
      ]),
    );
    expect(ok.routes.map((r) => [r.token, r.resource, r.exchange])).toEqual([
      ['user', 'https://orders.example', undefined],
      ['exchange', undefined, { audience: 'billing', scope: 'billing:read' }],
    ]);
    expect(
      problemsOf(() =>
        parseConfig(
          withSection('routes', [
            { prefix: '/a', ...api, token: 'client', resource: 'https://a.example' },
            { prefix: '/b', ...api, exchange: { audience: 'b' } },
            { prefix: '/c', ...api, token: 'exchange' },
            { prefix: '/d', ...api, resource: 'https://d.example/#frag' },
            { prefix: '/e', ...api, token: 'exchange', exchange: { audience: 'e', scopes: 'x' } },
          ]),
        ),
      ),
    ).toEqual([
      'routes[4].exchange.scopes: is not a known key (did you mean scope?); known keys here: audience, scope, resource',
      'routes[0].resource: is set but token is client; a resource indicator applies to token: user routes only',
      'routes[1].exchange: is set but token is user; expected token: exchange with it',
      'routes[2].exchange: is missing; token: exchange needs exchange.audience (and optionally scope)',
      'routes[3].resource: is "https://d.example/#frag"; expected an absolute URI without a fragment (RFC 8707), such as https://orders.example',
    ]);
  });

  it('a route policy and identity headers are refused on an anonymous route', () => {
    const route = { prefix: '/api', upstream: 'http://127.0.0.1:9500', token: 'none', anonymous: true, require: { acr: ['gold'] }, identityHeaders: { 'X-User-Sub': 'sub' } };
    expect(problemsOf(() => parseConfig(withSection('routes', [route])))).toEqual([
      'routes[0].require: is set but the route is anonymous: a route policy and identity headers need a session (remove anonymous: true)',
      'routes[0].identityHeaders: is set but the route is anonymous: a route policy and identity headers need a session (remove anonymous: true)',
    ]);
  });

  it('an identity header may not be one token-handler sets itself', () => {
    const route = { prefix: '/api', upstream: 'http://127.0.0.1:9500', identityHeaders: { 'X-Forwarded-User': 'sub', Authorization: 'sub', 'X User': 'sub' } };
    expect(problemsOf(() => parseConfig(withSection('routes', [route])))).toEqual([
      'routes[0].identityHeaders.X-Forwarded-User: is a header token-handler or HTTP sets itself; expected a header of your own, e.g. X-User-Sub',
      'routes[0].identityHeaders.Authorization: is a header token-handler or HTTP sets itself; expected a header of your own, e.g. X-User-Sub',
      'routes[0].identityHeaders.X User: is not a header name; expected letters, digits and - (e.g. X-User-Sub)',
    ]);
  });

  it('limits.headersTimeoutMs may not exceed limits.requestTimeoutMs', () => {
    expect(problemsOf(() => parseConfig(withSection('limits', { requestTimeoutMs: 5000, headersTimeoutMs: 6000 })))).toEqual([
      'limits.headersTimeoutMs: is 6000; expected at most limits.requestTimeoutMs (5000)',
    ]);
  });

  it("a rewritePrefix that repeats the upstream's base path is refused with what it would do", () => {
    expect(problemsOf(() => parseConfig(withSection('routes', [{ prefix: '/api', upstream: 'http://127.0.0.1:9500/v1', rewritePrefix: '/v1' }])))).toEqual([
      'routes[0].rewritePrefix: is "/v1", which repeats the upstream\'s path "/v1": it is appended to that path (/api/x would go to /v1/v1/x); expected "" or only what comes after "/v1"',
    ]);
    expect(parseConfig(withSection('routes', [{ prefix: '/api', upstream: 'http://127.0.0.1:9500/base', rewritePrefix: '/v1' }])).routes[0]!.rewritePrefix).toBe('/v1');
  });

  it('metrics.port may not be the main listener port', () => {
    expect(problemsOf(() => parseConfig({ ...withSection('metrics', { port: 8080 }) })).at(0)).toMatch(/^metrics\.port: is 8080, the same as listen\.port/);
  });
});

describe('the frontend route', () => {
  const spaDir = (): string => {
    const dir = mkdtempSync(join(tmp, 'spa-'));
    writeFileSync(join(dir, 'index.html'), '<!DOCTYPE html><title>SPA</title>');
    return dir;
  };
  const api = { prefix: '/api', upstream: 'http://127.0.0.1:9500' };
  const devServer = { prefix: '/', upstream: 'http://127.0.0.1:5173', token: 'none', anonymous: true, websocket: true };

  it('prefix / with static serves the build directory, stored as an absolute path', () => {
    const dir = spaDir();
    const config = parseConfig(withSection('routes', [api, { prefix: '/', static: dir }]));
    expect(config.routes[1]).toMatchObject({ prefix: '/', static: dir });
  });

  it("prefix / with the dev server, token: none and anonymous: true passes the dev server's WebSocket", () => {
    expect(parseConfig(withSection('routes', [api, devServer])).routes[1]).toMatchObject({ upstream: 'http://127.0.0.1:5173', websocket: true });
  });

  it('a static directory without index.html is refused', () => {
    const dir = mkdtempSync(join(tmp, 'empty-'));
    expect(problemsOf(() => parseConfig(withSection('routes', [{ prefix: '/', static: dir }])))).toEqual([
      `routes[0].static: is "${dir}", which has no index.html; expected the directory of the SPA's build, with index.html (relative paths start at the working directory)`,
    ]);
  });

  it('a frontend route with neither a directory nor a dev server is refused', () => {
    expect(problemsOf(() => parseConfig(withSection('routes', [{ prefix: '/' }])))).toEqual([
      "routes[0].static: is missing; the frontend route (prefix /) needs static (the SPA's build directory) or upstream (its dev server)",
    ]);
  });

  it('a dev server that would get the user token is refused', () => {
    expect(problemsOf(() => parseConfig(withSection('routes', [{ prefix: '/', upstream: 'http://127.0.0.1:5173' }])))).toEqual([
      "routes[0].token: is user without anonymous: true; the frontend route's dev server serves every visitor's pages without a token: set token: none and anonymous: true",
    ]);
  });

  it('static and contentSecurityPolicy on an API route are refused; websocket is allowed there', () => {
    const problems = problemsOf(() => parseConfig(withSection('routes', [{ ...api, static: spaDir(), websocket: true, contentSecurityPolicy: "default-src 'self'" }])));
    expect(problems).toEqual([
      'routes[0].static: is set on an API route; only the frontend route (prefix /) serves a directory',
      'routes[0].contentSecurityPolicy: is set on an API route; only the frontend route (prefix /) serves pages',
    ]);
    expect(parseConfig(withSection('routes', [{ ...api, websocket: true, closeOnTokenExpiry: true }])).routes[0]).toMatchObject({ websocket: true, closeOnTokenExpiry: true });
  });

  it('errors.pagePath must be a path of the SPA on this origin', () => {
    expect(parseConfig(withSection('errors', { pagePath: '/error' })).errors.pagePath).toBe('/error');
    expect(problemsOf(() => parseConfig(withSection('errors', { pagePath: '//evil.example/error' })))).toEqual([
      'errors.pagePath: is "//evil.example/error"; expected a path on this origin such as /error',
    ]);
    expect(problemsOf(() => parseConfig(withSection('errors', { pagePath: '/auth/login' })))).toEqual([
      'errors.pagePath: is "/auth/login", which token-handler serves itself; expected a path of the SPA such as /error',
    ]);
  });
});

describe('configuration files', () => {
  it('the example configuration is valid', async () => {
    const config = await loadConfig({ file: EXAMPLE, env: {} });
    expect(config.routes).toEqual([expect.objectContaining({ prefix: '/api', upstream: 'http://127.0.0.1:9500' })]);
    expect(config.session.redis).toEqual({ url: 'redis://127.0.0.1:6379', keyPrefix: 'th:', localCacheEntries: 20_000 });
  });

  it('the example documents every key with its environment variable', () => {
    const example = readFileSync(EXAMPLE, 'utf8');
    for (const name of configEnvNames()) expect(example, name).toContain(name);
    const routeKeys = ['prefix', 'upstream', 'rewritePrefix', 'token', 'anonymous', 'retryOn401', 'stripCookies', 'clientScopes', 'tlsRejectUnauthorized', 'tlsCaFile', 'connectTimeoutMs', 'responseTimeoutMs', 'connections', 'keepAliveTimeoutMs', 'bufferResponseBytes', 'static', 'websocket', 'closeOnTokenExpiry', 'websocketMaxMessageBytes', 'websocketPingSeconds', 'contentSecurityPolicy', 'resource', 'exchange', 'require', 'claims', 'acr', 'maxAgeSeconds', 'identityHeaders', 'dpop'];
    for (const key of routeKeys) expect(example, key).toMatch(new RegExp(`^\\s*(#\\s*)?(- )?${key}:`, 'm'));
  });

  it('the example names the shipped JSON Schema for editors, and passes it', () => {
    const example = readFileSync(EXAMPLE, 'utf8');
    expect(example.split('\n')[0]).toBe('# yaml-language-server: $schema=./schema.json');
    const shipped = JSON.parse(readFileSync(fileURLToPath(new URL('../config/schema.json', import.meta.url)), 'utf8')) as object;
    // What an editor does with it: unknown annotations are ignored, not errors.
    const validate = new Ajv({ allErrors: true, strict: false }).compile(shipped);
    expect(validate(parse(example)), JSON.stringify(validate.errors)).toBe(true);
    expect(validate(parse('listen: { prot: 1 }\nroutes: [{ upstream: http://api }]\n'))).toBe(false);
    expect(validate.errors?.map((e) => `${e.instancePath} ${e.message}`)).toEqual([
      '/listen must NOT have additional properties',
      "/routes/0 must have required property 'prefix'",
    ]);
  });

  it("the README's local-development recipe is a valid configuration with the dev server as the frontend route", () => {
    const readme = readFileSync(fileURLToPath(new URL('../README.md', import.meta.url)), 'utf8');
    const recipe = /`token-handler\.dev\.yaml`:\n\n\s*```yaml\n([\s\S]*?)```/.exec(readme)?.[1];
    expect(recipe, 'the recipe in the README').toBeDefined();
    const config = parseConfig(parse(recipe!.replace(/^ {3}/gm, '')) as Record<string, unknown>, { TH_OIDC_CLIENT_SECRET: 'secret', TH_SESSION_SECRETS: SECRET });
    expect(config.routes[1]).toMatchObject({ prefix: '/', upstream: 'http://127.0.0.1:5173', token: 'none', anonymous: true, websocket: true });
  });

  it("the README's two-app configuration is valid, with each app's secret from its variable", () => {
    const readme = readFileSync(fileURLToPath(new URL('../README.md', import.meta.url)), 'utf8');
    const recipe = /## Several apps[\s\S]*?```yaml\n([\s\S]*?)```/.exec(readme)?.[1];
    expect(recipe, 'the two-app configuration in the README').toBeDefined();
    const config = parseConfig(parse(recipe!) as Record<string, unknown>, {
      TH_SESSION_SECRETS: SECRET,
      TH_APPS_SHOP_OIDC_CLIENT_SECRET: 'shop-secret',
      TH_APPS_ADMIN_OIDC_CLIENT_SECRET: 'admin-secret',
    });
    expect(appsOf(config).map((app) => [app.name, app.host, app.config.oidc.clientSecret, app.config.session.cookieName])).toEqual([
      ['shop', 'shop.example.com', 'shop-secret', 'th_shop'],
      ['admin', 'admin.example.com', 'admin-secret', 'th_admin'],
    ]);
  });

  it('YAML and JSON files load alike', async () => {
    const raw = withSection('routes', [{ prefix: '/api', upstream: 'http://127.0.0.1:9500' }]);
    const fromYaml = await loadConfig({ file: writeTemp('alike.yaml', stringify(raw)), env: {} });
    const fromYml = await loadConfig({ file: writeTemp('alike.yml', stringify(raw)), env: {} });
    const fromJson = await loadConfig({ file: writeTemp('alike.json', JSON.stringify(raw, null, 2)), env: {} });
    expect(fromYaml).toEqual(parseConfig(raw));
    expect(fromYml).toEqual(fromYaml);
    expect(fromJson).toEqual(fromYaml);
  });

  it('TH_CONFIG names the file when none is given, and the rest of the environment still applies', async () => {
    const file = writeTemp('from-env.yaml', stringify(minimal()));
    const config = await loadConfig({ env: { TH_CONFIG: file, TH_LOGGING_LEVEL: 'debug' } });
    expect(config.oidc.clientId).toBe('bff');
    expect(config.logging.level).toBe('debug');
  });

  it('a file that cannot be read is reported clearly', async () => {
    const file = join(tmp, 'absent.yaml');
    expect(await problemsOfAsync(() => loadConfig({ file, env: {} }))).toEqual([
      `${file}: cannot be read (ENOENT); expected a readable YAML or JSON file`,
    ]);
    expect(await problemsOfAsync(() => loadConfig({ env: { TH_CONFIG: file } }))).toEqual([
      `${file} (from TH_CONFIG): cannot be read (ENOENT); expected a readable YAML or JSON file`,
    ]);
  });

  it('a syntax error is reported by line and column without quoting the file', async () => {
    const file = writeTemp('broken.yaml', 'oidc:\n  clientSecret: hunter2\n  issuer: [https://idp\n');
    const problems = await problemsOfAsync(() => loadConfig({ file, env: {} }));
    expect(problems.length).toBeGreaterThan(0);
    for (const line of problems) {
      expect(line).toMatch(new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: line \\d+, column \\d+: .+; expected valid YAML or JSON$`));
      expect(line).not.toContain('hunter2');
    }
  });

  it('a file with another extension is refused', async () => {
    const file = writeTemp('config.toml', 'x = 1');
    expect(await problemsOfAsync(() => loadConfig({ file, env: {} }))).toEqual([
      `${file}: has extension ".toml"; expected a file ending in .yaml, .yml, .json`,
    ]);
  });

  it('an empty file means every key comes from the environment', async () => {
    const file = writeTemp('empty.yaml', '');
    const config = await loadConfig({
      file,
      env: { TH_PUBLIC_URL: 'https://app.example.com', TH_OIDC_ISSUER: 'https://idp.example.com', TH_OIDC_CLIENT_ID: 'bff', TH_OIDC_CLIENT_SECRET: 's', TH_SESSION_SECRETS: SECRET },
    });
    expect(config.publicUrl).toBe('https://app.example.com');
  });
});

describe('several apps (apps:)', () => {
  /** Two apps inheriting the top-level session; each with its own provider client. */
  function twoApps(): Record<string, unknown> {
    return {
      session: { secrets: [SECRET] },
      oidc: { scopes: ['openid', 'offline_access'] },
      apps: [
        { name: 'shop', match: { host: 'shop.example.com' }, publicUrl: 'https://shop.example.com', oidc: { issuer: 'https://idp.example.com', clientId: 'shop', clientSecret: 's1' }, session: { cookieName: 'th_shop' }, routes: [{ prefix: '/api', upstream: 'http://127.0.0.1:9500' }] },
        { name: 'admin-console', publicUrl: 'https://admin.example.com', oidc: { issuer: 'https://login.example.org', clientId: 'admin', clientSecret: 's2' }, session: { idleTimeoutSeconds: 600 } },
      ],
    };
  }

  it('each app inherits the top-level sections key by key, with its own publicUrl, match and logout redirect', () => {
    const config = parseConfig(twoApps());
    const [shop, admin] = appsOf(config);
    expect(shop).toMatchObject({ name: 'shop', host: 'shop.example.com', pathPrefix: '' });
    expect(shop!.config.oidc).toMatchObject({ clientId: 'shop', scopes: ['openid', 'offline_access'], clientAuth: 'client_secret_basic', postLogoutRedirectUri: 'https://shop.example.com/' });
    expect(shop!.config.session).toMatchObject({ cookieName: 'th_shop', secrets: [SECRET], idleTimeoutSeconds: 1800, store: 'cookie' });
    // match.host defaults to publicUrl's host.
    expect(admin).toMatchObject({ name: 'admin-console', host: 'admin.example.com' });
    expect(admin!.config.session).toMatchObject({ cookieName: 'th_session', idleTimeoutSeconds: 600 });
    expect(admin!.config.routes).toEqual([]);
    expect(admin!.config.publicUrl).toBe('https://admin.example.com');
  });

  it('the single-app form is one app named default that matches every host', () => {
    expect(appsOf(parseConfig(minimal()))).toEqual([expect.objectContaining({ name: 'default', host: undefined, pathPrefix: '' })]);
  });

  it('duplicate names, matches and cookie names on one host are refused, naming the first', () => {
    const raw = twoApps();
    const apps = raw.apps as Array<Record<string, unknown>>;
    apps.push({ name: 'shop', publicUrl: 'https://shop.example.com', session: { cookieName: 'th_shop' } });
    apps.push({ name: 'admin_console', match: { host: 'admin.example.com', pathPrefix: '/ops' }, publicUrl: 'https://admin.example.com' });
    expect(problemsOf(() => parseConfig(raw))).toEqual([
      'apps[2].name: is "shop", the same as apps[0].name; each app needs its own name',
      'apps[2].match: is host "shop.example.com", the same as apps[0].match; each app needs its own host, or its own pathPrefix on a shared host',
      'apps[2].session.cookieName: is "th_shop", the same as apps[0]\'s on host "shop.example.com"; apps on one host need distinct cookie names (e.g. th_shop)',
      'apps[3].name: is "admin_console", whose variables (TH_APPS_ADMIN_CONSOLE_*) are those of apps[1].name; expected a name that differs in more than "-" and "_"',
      'apps[3].session.cookieName: is "th_session", the same as apps[1]\'s on host "admin.example.com"; apps on one host need distinct cookie names (e.g. th_admin_console)',
      'apps[2].oidc.issuer: is missing; expected it in the app, or once at the top level (oidc.issuer) for every app that leaves it out',
      'apps[2].oidc.clientId: is missing; expected it in the app, or once at the top level (oidc.clientId) for every app that leaves it out',
      'apps[2].oidc.clientSecret: is missing; required when oidc.clientAuth is client_secret_basic',
      'apps[3].oidc.issuer: is missing; expected it in the app, or once at the top level (oidc.issuer) for every app that leaves it out',
      'apps[3].oidc.clientId: is missing; expected it in the app, or once at the top level (oidc.clientId) for every app that leaves it out',
      'apps[3].oidc.clientSecret: is missing; required when oidc.clientAuth is client_secret_basic',
    ]);
  });

  it('publicUrl and routes at the top level are refused beside apps; session.redis is not an app key', () => {
    const raw: Record<string, unknown> = { ...twoApps(), publicUrl: 'https://app.example.com', routes: [{ prefix: '/api', upstream: 'http://127.0.0.1:9500' }] };
    (raw.apps as Array<Record<string, unknown>>)[1]!.session = { redis: { url: 'redis://127.0.0.1:6379' } };
    expect(problemsOf(() => parseConfig(raw))).toEqual([
      expect.stringMatching(/^apps\[1\]\.session\.redis: is not a known key; known keys here: store, secrets, cookieName/),
      'publicUrl: is set together with apps; each app has its own (apps[].publicUrl): move it into the apps',
      'routes: is set together with apps; each app has its own routes (apps[].routes): move them into the app they belong to',
    ]);
  });

  it("an app's keys are checked like the top level's, and reported under the app", () => {
    const raw = twoApps();
    const [shop, admin] = raw.apps as Array<Record<string, unknown>>;
    shop!.publicUrl = 'https://shop.example.com/path';
    shop!.match = { host: 'shop.example.com', pathPrefix: '/' };
    admin!.oidc = { issuer: 'https://login.example.org', clientId: 'admin' };
    admin!.routes = [{ prefix: '/auth/x', upstream: 'http://127.0.0.1:9500' }];
    expect(problemsOf(() => parseConfig(raw))).toEqual([
      'apps[0].match.pathPrefix: is "/", the whole host; leave pathPrefix out for that, or give a prefix such as /partners',
      'apps[0].publicUrl: has "/path" after the origin; expected a bare origin such as https://app.example.com (token-handler is served at the root)',
      'apps[1].routes[0].prefix: is "/auth/x", which token-handler serves itself; expected a prefix outside /auth, /healthz, /readyz, /metrics',
      'apps[1].oidc.clientSecret: is missing; required when oidc.clientAuth is client_secret_basic',
    ]);
  });

  it("an app's secret comes from TH_APPS_<NAME>_<KEY>, named in its problems, and an unknown app's variable is refused", () => {
    const raw = twoApps();
    delete ((raw.apps as Array<Record<string, unknown>>)[1]!.oidc as Record<string, unknown>).clientSecret;
    const config = parseConfig(raw, { TH_APPS_ADMIN_CONSOLE_OIDC_CLIENT_SECRET: 'from-env', TH_APPS_SHOP_SESSION_SECRETS: `${SECRET}x` });
    const [shop, admin] = appsOf(config);
    expect(admin!.config.oidc.clientSecret).toBe('from-env');
    expect(shop!.config.session.secrets).toEqual([`${SECRET}x`]);
    expect(problemsOf(() => parseConfig(raw, { TH_APPS_SHOP_SESSION_SECRETS: 'short', TH_APPS_SHOPP_OIDC_CLIENT_ID: 'x' }))).toEqual([
      "TH_APPS_SHOPP_OIDC_CLIENT_ID: is not a known variable (did you mean TH_APPS_SHOP_OIDC_CLIENT_ID?) (per-app variables are TH_APPS_<NAME>_<KEY> for an app of apps: shop, admin-console); every key's variable is TH_ + its path in UPPER_SNAKE_CASE, e.g. TH_OIDC_CLIENT_SECRET",
      'apps[0].session.secrets[0] (from TH_APPS_SHOP_SESSION_SECRETS): is 5 characters long; each secret must be at least 32 characters',
      'apps[1].oidc.clientSecret: is missing; required when oidc.clientAuth is client_secret_basic',
    ]);
  });

  it('the example configuration’s apps are a valid configuration', () => {
    const example = readFileSync(EXAMPLE, 'utf8');
    const block = example.slice(example.indexOf('\n# apps:') + 1).replace(/^# ?/gm, '');
    const apps = (parse(block) as { apps: unknown }).apps;
    const config = parseConfig({ ...withSection('routes', []), publicUrl: null, apps }, { TH_APPS_SHOP_OIDC_CLIENT_SECRET: 's', TH_APPS_ADMIN_OIDC_CLIENT_SECRET: 's' });
    expect(appsOf(config).map((app) => app.name)).toEqual(['shop', 'admin']);
  });
});
