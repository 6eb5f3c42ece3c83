/**
 * The configuration schema: the one description of every key, its type, default, limits
 * and documentation. Written with TypeBox because one object then gives three things:
 * standard JSON Schema (shipped as config/schema.json, so editors complete and check
 * configuration files), the TypeScript types (`Static<>` in types.ts), and validation by
 * ajv — the validator Fastify itself uses — in validate.ts.
 *
 * Two annotations of our own ride along (JSON Schema tools ignore them): `x-expected`,
 * what a valid value looks like in a problem line, and `writeOnly` (standard), which marks
 * secrets that a problem line must never echo. What ajv cannot say (URLs as the runtime
 * parses them, files that must exist, rules across keys) is code in checks.ts and rules.ts.
 */
import { Type, type SchemaOptions, type TSchema, type TUnsafe } from '@sinclair/typebox';

/** Options every key may carry, besides the JSON Schema ones. */
interface KeyOptions extends SchemaOptions {
  description: string;
  'x-expected'?: string;
}

/** A string enum as JSON Schema `enum` (editors offer the values), typed as the union of them. */
function OneOf<const T extends readonly string[]>(values: T, options: KeyOptions): TUnsafe<T[number]> {
  return Type.Unsafe<T[number]>({ ...options, type: 'string', enum: [...values] });
}

function Int(minimum: number, maximum: number | undefined, options: KeyOptions) {
  return Type.Integer({ ...options, minimum, ...(maximum === undefined ? {} : { maximum }) });
}

/** A section: unknown keys are refused, and an absent section is filled from its defaults. */
function Section<T extends Record<string, TSchema>>(properties: T, description: string) {
  return Type.Object(properties, { description, additionalProperties: false, default: {} });
}

const HTTP_URL = 'an absolute http or https URL';

export const ListenSchema = Section(
  {
    host: Type.String({ default: '0.0.0.0', minLength: 1, description: 'Interface to listen on.', 'x-expected': 'a host name or IP address to listen on' }),
    port: Int(0, 65535, { default: 8080, description: 'TCP port (0: any free port).' }),
    trustProxy: Type.Union([Type.Boolean(), Type.Array(Type.String({ minLength: 1 }), { minItems: 1 })], {
      default: false,
      description:
        "Which proxies in front may say who the client is (X-Forwarded-For; the address keys the rate limits and is sent upstream): false (none: the TCP peer), a list of your proxies' addresses/CIDRs (behind a load balancer; a comma-separated string is accepted too), or true (every hop: the leftmost address, which any client can write). Hop counts are refused: they cannot tell the balancer from a client that connects directly.",
      'x-expected': "false, a list of your proxies' addresses/CIDRs such as [10.0.0.0/8] (behind a load balancer), or true",
    }),
  },
  'Where token-handler listens.',
);

export const OidcSchema = Section(
  {
    issuer: Type.String({
      description:
        'Issuer identifier, kept exactly as written (compared as a string); discovery at <issuer>/.well-known/openid-configuration. https required; http only on localhost, 127.0.0.1, ::1 or with allowInsecureIssuer.',
      'x-expected': 'the issuer URL, e.g. https://idp.example.com',
    }),
    clientId: Type.String({ minLength: 1, description: 'Client ID registered at the provider.', 'x-expected': 'the client ID registered at the provider' }),
    clientSecret: Type.Optional(
      Type.String({
        minLength: 1,
        writeOnly: true,
        description: 'Client secret: required for client_secret_basic and client_secret_post, refused for none. Better set from the environment than kept in a file.',
        'x-expected': 'the client secret',
      }),
    ),
    privateKeyJwk: Type.Optional(
      Type.Record(Type.String(), Type.Unknown(), {
        writeOnly: true,
        description: 'Private JWK (object with kty and d) signing the client assertion; required for private_key_jwt. As a variable: JSON text.',
        'x-expected': 'a private JWK as a JSON object with "kty" and "d"',
      }),
    ),
    clientAuth: OneOf(['client_secret_basic', 'client_secret_post', 'private_key_jwt', 'none'], {
      default: 'client_secret_basic',
      description: 'How token-handler authenticates at the token endpoint (none: a public client).',
    }),
    clientSecretBasicEncoding: OneOf(['rfc6749', 'plain'], {
      default: 'rfc6749',
      description:
        'client_secret_basic only: rfc6749 form-encodes id and secret before Base64 (RFC 6749 section 2.3.1); plain Base64-encodes "id:secret" as written, for providers that do not form-decode.',
    }),
    pushedAuthorizationRequests: OneOf(['auto', 'always', 'never'], {
      default: 'auto',
      description:
        "Pushed Authorization Requests (RFC 9126): auto pushes when the provider's discovery advertises a PAR endpoint, always refuses to log in without one, never does not push.",
    }),
    scopes: Type.Array(Type.String({ minLength: 1, 'x-expected': 'a scope name without spaces' }), {
      minItems: 1,
      default: ['openid', 'profile', 'email', 'offline_access'],
      description: 'Scopes asked at login; must include openid (offline_access gets a refresh token from most providers). As a variable: comma-separated.',
    }),
    refreshSkewSeconds: Int(0, 3600, { default: 30, description: 'Refresh the access token proactively when it expires within this many seconds.' }),
    timeoutMs: Int(100, 120_000, { default: 5000, description: 'Timeout of every call to the provider, in milliseconds.' }),
    defaultAccessTokenSeconds: Int(1, 86_400, {
      default: 300,
      description: 'Access-token life assumed when the provider sends no expires_in and the token is not a JWT.',
    }),
    postLogoutRedirectUri: Type.String({
      description: 'Where the provider sends the browser after logout, registered at the provider. Default: publicUrl + "/".',
      'x-expected': HTTP_URL,
    }),
    authorizationParams: Type.Record(Type.String(), Type.String(), {
      default: {},
      description:
        'Extra parameters of the authorization request, string values only (e.g. prompt, audience, acr_values); parameters the login flow sets itself are refused. As a variable: JSON text.',
      'x-expected': 'an object of string values, e.g. { prompt: login }',
    }),
    allowInsecureIssuer: Type.Boolean({
      default: false,
      description: 'Allow a plain-http issuer on a host other than localhost. Development and tests only (set automatically for an http issuer on localhost).',
    }),
    logoutIdTokenHint: Type.Boolean({
      default: false,
      description:
        'Put id_token_hint (the ID token) in the logout URL handed to the browser. Off by default: that URL is readable by page scripts and lands in browser history.',
    }),
  },
  'The OpenID Connect provider and this client at it.',
);

/** A Redis node as host:port (a Sentinel or a Cluster seed node). */
const RedisNodes = (what: string) =>
  Type.Array(Type.String({ minLength: 1, 'x-expected': 'host:port, e.g. redis-1.internal:6379' }), {
    minItems: 1,
    description: `${what} as host:port. As a variable: comma-separated.`,
    'x-expected': 'a list of host:port, e.g. [redis-1:26379, redis-2:26379]',
  });

export const RedisSchema = Type.Object(
  {
    url: Type.Optional(
      Type.String({
        writeOnly: true,
        description: 'One Redis server: redis:// or rediss:// (TLS) URL (may carry a user and password; never shown in configuration problems). One of url, sentinel or cluster.',
        'x-expected': 'a redis:// or rediss:// URL',
      }),
    ),
    sentinel: Type.Optional(
      Type.Object(
        {
          name: Type.String({ minLength: 1, description: 'The master group name the Sentinels monitor (sentinel monitor <name> ...).', 'x-expected': 'a master name, e.g. mymaster' }),
          nodes: RedisNodes('The Sentinels asked for the current master'),
        },
        { additionalProperties: false, description: 'A master and replicas behind Redis Sentinel: follows failovers. One of url, sentinel or cluster.' },
      ),
    ),
    cluster: Type.Optional(
      Type.Object(
        { nodes: RedisNodes('Some of the cluster nodes (the rest are discovered)') },
        { additionalProperties: false, description: 'Redis Cluster: keys are spread over the masters by hash slot. One of url, sentinel or cluster.' },
      ),
    ),
    username: Type.Optional(
      Type.String({ minLength: 1, description: 'ACL user of the Redis servers (overrides one in url).', 'x-expected': 'an ACL user name' }),
    ),
    password: Type.Optional(
      Type.String({
        minLength: 1,
        writeOnly: true,
        description: 'Password of the Redis servers (overrides one in url). Better set from the environment than kept in a file.',
        'x-expected': 'the Redis password',
      }),
    ),
    tls: Type.Optional(
      Type.Object(
        {
          caFile: Type.Optional(
            Type.String({ minLength: 1, description: "PEM file of the CA certificates that signed the Redis servers' certificates; must exist. Default: the system CAs.", 'x-expected': 'the path of a PEM file' }),
          ),
        },
        {
          additionalProperties: false,
          description: 'TLS to every Redis node (with sentinel: the Sentinels and the servers; with cluster: every node). With url, use rediss://; tls then only adds caFile.',
        },
      ),
    ),
    keyPrefix: Type.String({
      default: 'th:',
      pattern: '^[^{}]*$',
      description: 'Prefix of every key token-handler writes; no { or } (on a Cluster the braces mark hash tags).',
      'x-expected': 'a key prefix without { or }, e.g. th:',
    }),
    localCacheEntries: Int(0, 1_000_000, {
      default: 10_000,
      description:
        'Entries each replica keeps in memory (session records with store: redis, denylist answers with store: cookie), dropped the moment Redis reports a change (client tracking). 0 turns the cache off. Off with cluster (logged at startup).',
    }),
  },
  {
    additionalProperties: false,
    description: 'Redis connection: required for store: redis, optional otherwise. Setting any TH_SESSION_REDIS_* variable creates this block.',
  },
);

export const SessionSchema = Section(
  {
    store: OneOf(['cookie', 'memory', 'redis'], {
      default: 'cookie',
      description: 'Where sessions live: cookie (sealed in the cookie itself), memory (one process, lost on restart) or redis (shared by replicas; needs redis.url).',
    }),
    secrets: Type.Array(Type.String({ minLength: 32, 'x-expected': 'a secret of at least 32 characters' }), {
      minItems: 1,
      writeOnly: true,
      description:
        'Sealing secrets, each at least 32 characters (e.g. `openssl rand -base64 48`). The first seals; all of them unseal, so rotate by putting a new one first. As a variable: comma-separated.',
      'x-expected': 'a list of secrets of at least 32 characters',
    }),
    cookieName: Type.String({
      default: 'th_session',
      minLength: 1,
      pattern: '^[A-Za-z0-9_-]+$',
      description: 'Base name of the session cookie ("__Host-" is prepended on https).',
      'x-expected': 'letters, digits, "_" and "-" only',
    }),
    sameSite: OneOf(['strict', 'lax'], { default: 'strict', description: 'SameSite of the session cookie.' }),
    idleTimeoutSeconds: Int(60, undefined, { default: 1800, description: 'A session unused for this long ends.' }),
    absoluteTimeoutSeconds: Int(60, undefined, { default: 28_800, description: 'A session ends this long after login whatever its use; at least idleTimeoutSeconds.' }),
    redis: Type.Optional(RedisSchema),
    pendingLoginTimeoutSeconds: Int(30, 3600, { default: 600, description: 'How long a started login may take before its pending-login cookie is ignored.' }),
    maxPendingLogins: Int(1, 20, { default: 5, description: 'Logins that may be pending at once per browser (several tabs); the oldest is dropped.' }),
    omitClaims: Type.Array(Type.String({ minLength: 1, 'x-expected': 'a claim name, e.g. nonce' }), {
      default: ['nonce', 'at_hash', 'c_hash', 's_hash'],
      description: 'ID-token claims GET /auth/user leaves out: protocol fields, not facts about the user. As a variable: comma-separated.',
    }),
  },
  'Sessions and their cookie.',
);

export const RouteSchema = Type.Object(
  {
    prefix: Type.String({
      minLength: 1,
      description: 'Path prefix served: starts with "/", no trailing "/", unique, and not /auth, /healthz, /readyz, /metrics or below them.',
      'x-expected': 'a path prefix such as /api',
    }),
    upstream: Type.String({
      description: 'Base URL of the upstream, http or https, optionally with a base path (http://api:8080/base: /api/x -> /base/x).',
      'x-expected': HTTP_URL,
    }),
    rewritePrefix: Type.String({
      default: '',
      description: 'What replaces prefix in the upstream path: "" strips it (/api/x -> /x), "/v1" maps /api/x -> /v1/x.',
      'x-expected': '"" or a path such as /v1',
    }),
    token: OneOf(['user', 'client', 'none'], {
      default: 'user',
      description: "Token attached: user (the session's access token), client (a client-credentials token; needs a confidential client) or none.",
    }),
    anonymous: Type.Boolean({
      default: false,
      description:
        "token: client and token: none only: let callers without a session through (otherwise 401 login_required). Anyone can then spend the application's client-credentials token on the upstream.",
    }),
    retryOn401: Type.Boolean({ default: true, description: 'On an upstream 401: refresh once and replay once (token: user).' }),
    stripCookies: OneOf(['own', 'all'], { default: 'own', description: "Cookies stripped before proxying: own (token-handler's only) or all." }),
    clientScopes: Type.Array(Type.String({ minLength: 1, 'x-expected': 'a scope name without spaces' }), {
      default: [],
      description: 'Scopes asked for the client-credentials token (token: client).',
    }),
    tlsRejectUnauthorized: Type.Boolean({ default: true, description: "Verify the upstream's TLS certificate; false is logged loudly at startup." }),
    tlsCaFile: Type.Optional(
      Type.String({ minLength: 1, description: 'PEM file of extra CA certificates trusted for this upstream; must exist.', 'x-expected': 'the path of a PEM file' }),
    ),
    connectTimeoutMs: Int(100, 120_000, { default: 5000, description: 'Time allowed to connect to the upstream, ms (504 upstream_timeout after).' }),
    responseTimeoutMs: Int(100, 3_600_000, {
      default: 30_000,
      description: "Time allowed for the upstream's response headers, and between body chunks, ms (504 upstream_timeout after).",
    }),
    connections: Int(1, 10_000, { default: 128, description: 'Keep-alive connection pool size to this upstream.' }),
    keepAliveTimeoutMs: Int(100, 600_000, { default: 4000, description: 'How long an idle upstream connection stays open for reuse, ms.' }),
    bufferResponseBytes: Int(0, 16_777_216, {
      default: 65_536,
      description:
        'Upstream responses announcing a Content-Length up to this many bytes (and a Content-Type) are read whole before they are passed on; longer ones and those without a length (streams, server-sent events) stream. 0 streams every response.',
    }),
  },
  { additionalProperties: false, description: 'An API route proxied with a token attached.' },
);

export const RefreshSchema = Section(
  {
    resultTtlSeconds: Int(0, 600, { default: 60, description: 'How long a refresh result is kept, so a request still carrying the pre-refresh cookie gets the new tokens.' }),
    resultMaxEntries: Int(1, undefined, { default: 10_000, description: 'Most refresh results kept at once.' }),
    replayBodyLimitBytes: Int(0, undefined, { default: 1_048_576, description: 'Request bodies up to this many bytes are buffered so they can be replayed after an upstream 401.' }),
    forcedMinIntervalSeconds: Int(0, 3600, {
      default: 10,
      description: 'POST /auth/refresh at most once per this many seconds per session (429 beyond; counted per process). 0: no limit.',
    }),
  },
  'Remembering refresh results, so a spent refresh token is never reused.',
);

export const CsrfSchema = Section(
  {
    header: Type.String({
      default: 'x-csrf',
      minLength: 1,
      pattern: "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$",
      description: 'Header every proxied and state-changing /auth call must carry with value 1; stored lower-case.',
      'x-expected': 'a header name (letters, digits and -)',
    }),
    allowedOrigins: Type.Array(Type.String({ minLength: 1, 'x-expected': 'an origin such as https://admin.example.com' }), {
      default: [],
      description: "Origins besides publicUrl's own allowed to call (scheme://host[:port], no path). As a variable: comma-separated.",
    }),
  },
  'Cross-site request forgery defence.',
);

export const LoggingSchema = Section(
  {
    level: OneOf(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], { default: 'info', description: 'Log level.' }),
    includeSubject: Type.Boolean({ default: false, description: "Log the user's sub with each request (otherwise only a session hash)." }),
    batchRequestLines: Type.Boolean({
      default: true,
      description: 'Write the per-request lines to stdout in batches (4 KiB, or a second after the first line held; before any other line; at exit) rather than one write per request.',
    }),
  },
  'Logging.',
);

export const MetricsSchema = Section(
  {
    enabled: Type.Boolean({ default: true, description: 'Serve Prometheus metrics at GET /metrics.' }),
    port: Int(0, 65535, {
      description: 'The separate port /metrics is served on, on listen.host (never the public listener). 0: any free port. Default 9090 (9091 when listen.port is 9090).',
    }),
    onMainListener: Type.Boolean({ default: false, description: 'Serve /metrics on the main listener instead (it is then public).' }),
  },
  'Prometheus metrics.',
);

export const LimitsSchema = Section(
  {
    bodyLimitBytes: Int(1024, undefined, {
      default: 10_485_760,
      description: "Largest request body accepted on API routes (413 payload_too_large beyond; token-handler's own /auth endpoints take 4 KiB at most).",
    }),
    headerLimitBytes: Int(1024, 1_048_576, { default: 16_384, description: 'Largest request header section accepted, bytes (431 beyond).' }),
    requestTimeoutMs: Int(1000, 3_600_000, { default: 60_000, description: 'Time a browser has to send a whole request, headers and body, ms (408 after). Uploads must fit in it.' }),
    headersTimeoutMs: Int(500, 600_000, { default: 10_000, description: 'Time a browser has to send the request headers, ms; at most requestTimeoutMs.' }),
    keepAliveTimeoutMs: Int(100, 600_000, {
      default: 5000,
      description: "How long an idle keep-alive connection stays open between requests, ms; behind a load balancer, longer than the balancer's idle timeout.",
    }),
    connectionTimeoutMs: Int(0, 3_600_000, { default: 120_000, description: 'A connection with no traffic either way for this long is closed, ms (0: never).' }),
  },
  'Limits the browser side is held to.',
);

export const ShutdownSchema = Section(
  {
    gracePeriodSeconds: Int(0, 600, {
      default: 25,
      description: "On SIGTERM/SIGINT, in-flight requests get this many seconds to finish (keep it below Kubernetes' terminationGracePeriodSeconds).",
    }),
  },
  'Graceful shutdown.',
);

export const RateLimitSchema = Section(
  {
    enabled: Type.Boolean({ default: true, description: 'Limit login attempts per client address (429 beyond); counted in Redis when session.redis is configured.' }),
    loginPerMinute: Int(1, 100_000, { default: 30, description: 'GET /auth/login per client address per minute.' }),
    callbackPerMinute: Int(1, 100_000, { default: 30, description: 'GET /auth/callback per client address per minute.' }),
  },
  'Rate limits of the login endpoints.',
);

export const ConfigSchema = Type.Object(
  {
    listen: ListenSchema,
    publicUrl: Type.String({
      description: 'Origin the browser sees, scheme://host[:port] with no path (token-handler is served at the root); redirect URI = publicUrl + /auth/callback.',
      'x-expected': 'the origin the browser sees, e.g. https://app.example.com',
    }),
    oidc: OidcSchema,
    session: SessionSchema,
    routes: Type.Array(RouteSchema, {
      default: [],
      description: 'API routes proxied with the access token attached. As a variable: a JSON array replacing the whole list.',
      'x-expected': 'a list of routes (objects with prefix and upstream)',
    }),
    refresh: RefreshSchema,
    csrf: CsrfSchema,
    logging: LoggingSchema,
    metrics: MetricsSchema,
    limits: LimitsSchema,
    shutdown: ShutdownSchema,
    rateLimit: RateLimitSchema,
  },
  {
    $schema: 'http://json-schema.org/draft-07/schema#',
    title: 'token-handler configuration',
    description:
      'Configuration of token-handler, a Backend-for-Frontend token handler. Every key can also be set by an environment variable: TH_ + the key path in UPPER_SNAKE_CASE (e.g. oidc.clientSecret -> TH_OIDC_CLIENT_SECRET).',
    additionalProperties: false,
  },
);
