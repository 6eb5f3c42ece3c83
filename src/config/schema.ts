/**
 * The configuration schema: the one description of every key, its type, default, limits
 * and documentation. Written with TypeBox because one object then gives three things:
 * standard JSON Schema (shipped as config/schema.json, so editors complete and check
 * configuration files), the TypeScript types (`Static<>` in types.ts), and validation by
 * ajv — the validator Fastify itself uses — in validator.ts.
 *
 * Two annotations of our own ride along (JSON Schema tools ignore them): `x-expected`,
 * what a valid value looks like in a problem line, and `writeOnly` (standard), which marks
 * secrets that a problem line must never echo. What ajv cannot say (URLs as the runtime
 * parses them, files that must exist, rules across keys) is code in checks.ts and rules.ts.
 */
import { Type, type SchemaOptions, type Static, type TObject, type TSchema, type TUnsafe } from '@sinclair/typebox';

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

export const HTTP_URL = 'an absolute http or https URL';

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
    allowedAcrValues: Type.Array(Type.String({ minLength: 1, maxLength: 200, pattern: '^[!#-\\[\\]-~]+$', 'x-expected': 'an acr value without spaces or quotes' }), {
      default: [],
      description:
        "acr values a browser may ask for at GET /auth/login?acr_values=... besides those the routes' require.acr name (any other value is refused with 400). As a variable: comma-separated.",
    }),
    allowInsecureIssuer: Type.Boolean({
      default: false,
      description: 'Allow a plain-http issuer on a host other than localhost. Development and tests only (set automatically for an http issuer on localhost).',
    }),
    dpop: Type.Boolean({
      default: false,
      description:
        "DPoP (RFC 9449): every token-endpoint call (code exchange, refresh, token exchange, client credentials) carries a DPoP proof, so the provider binds the tokens to token-handler's key; routes with dpop: true send them with a proof per request. Each session gets its own ES256 key at login (sealed in the session record: about 85 bytes more cookie with the cookie store), unless dpopKeyFile is set.",
    }),
    dpopKeyFile: Type.Optional(
      Type.String({
        minLength: 1,
        description:
          'oidc.dpop only: a file holding one private key (a JWK as JSON, or PEM; P-256 = ES256, P-384 = ES384 or Ed25519 = EdDSA) that binds every token, for providers or operators that require a known key. Default: a new key per session, and one per process for client-credentials tokens.',
        'x-expected': 'the path of a private key file (JWK or PEM)',
      }),
    ),
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
      default: 20_000,
      description:
        'Entries each replica keeps in memory (session records with store: redis, denylist answers with store: cookie), dropped the moment Redis reports a change (client tracking); about 3 KiB per session record. Size it above the sessions one replica serves within five minutes (entries are re-read after 5 min). 0 turns the cache off. Off with cluster (logged at startup).',
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
    maxEventStreams: Int(1, 100, { default: 5, description: 'GET /auth/events streams one session may hold open on one replica (one per tab; 429 beyond).' }),
    maxWebSockets: Int(1, 1000, {
      default: 20,
      description: 'WebSockets one session may hold open through websocket: true API routes, on one replica (429 too_many_requests on the upgrade beyond).',
    }),
  },
  'Sessions and their cookie.',
);

export const RouteSchema = Type.Object(
  {
    prefix: Type.String({
      minLength: 1,
      description:
        'Path prefix served: starts with "/", no trailing "/", unique, and not /auth, /healthz, /readyz, /metrics or below them. "/" alone is the frontend route: the catch-all that serves the SPA (static or a dev server), below every other route.',
      'x-expected': 'a path prefix such as /api, or / for the frontend route',
    }),
    upstream: Type.Optional(
      Type.String({
        description:
          'Base URL of the upstream, http or https, optionally with a base path (http://api:8080/base: /api/x -> /base/x). Required, except on the frontend route, which has upstream (its dev server, e.g. http://127.0.0.1:5173) or static.',
        'x-expected': HTTP_URL,
      }),
    ),
    static: Type.Optional(
      Type.String({
        minLength: 1,
        description:
          "The frontend route only (prefix /): the directory of the SPA's production build, with index.html (relative to the working directory). Files are served with compression; a page load of a path with no file gets index.html (client-side routes); hashed assets are cached for a year, index.html is revalidated.",
        'x-expected': "the SPA's build directory, e.g. ./spa/dist",
      }),
    ),
    websocket: Type.Boolean({
      default: false,
      description:
        "Pass WebSocket upgrades through to the upstream. On an API route: the upgrade needs the session (401 login_required) and an Origin that is publicUrl's or in csrf.allowedOrigins (403 csrf_failed; no X-CSRF header is possible on an upgrade); the upstream upgrade carries the route's token; every socket closes with 4401 session_ended when its session ends. On the frontend route: its dev server's hot reload (token: none, anonymous: true).",
    }),
    closeOnTokenExpiry: Type.Boolean({
      default: false,
      description:
        'websocket: true API routes: close a socket with 4001 token_expired when the access token its upgrade carried expires, so the browser reconnects with a fresh one (for APIs that check the token only at the upgrade).',
    }),
    websocketMaxMessageBytes: Int(1, 1024 * 1024 * 1024, {
      default: 1024 * 1024,
      description: 'websocket: true routes: the largest WebSocket message passed on, either way; a larger one closes the socket with 1009.',
    }),
    websocketPingSeconds: Int(0, 3600, {
      default: 30,
      description:
        "websocket: true API routes: ping the browser this often and close a socket whose previous ping went unanswered (a dead peer); 0: no pings. Keeps idle sockets alive through proxies' idle timeouts.",
    }),
    contentSecurityPolicy: Type.Optional(
      Type.String({
        pattern: '^[\\x20-\\x7E]*$',
        description:
          "The frontend route only: the Content-Security-Policy of the SPA's files. Default for static: default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'. \"\": none sent (e.g. the SPA sets its own). A dev server's answers get none unless set (dev servers inline scripts).",
        'x-expected': 'a Content-Security-Policy on one line',
      }),
    ),
    rewritePrefix: Type.String({
      default: '',
      description: 'What replaces prefix in the upstream path: "" strips it (/api/x -> /x), "/v1" maps /api/x -> /v1/x.',
      'x-expected': '"" or a path such as /v1',
    }),
    token: OneOf(['user', 'client', 'exchange', 'none'], {
      default: 'user',
      description:
        "Token attached: user (the session's access token, or with resource a token for that resource), client (a client-credentials token; needs a confidential client), exchange (the user's token exchanged for one with exchange.audience, RFC 8693) or none.",
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
    resource: Type.Optional(
      Type.String({
        minLength: 1,
        description:
          "token: user only: an RFC 8707 resource indicator (an absolute URI, no fragment). Login asks for every configured resource, and this route gets a token for this resource alone (its own audience and scopes), obtained with the refresh token and cached in the session.",
        'x-expected': 'an absolute URI such as https://orders.example',
      }),
    ),
    exchange: Type.Optional(
      Type.Object(
        {
          audience: Type.String({ minLength: 1, description: 'The audience asked for (RFC 8693 audience).', 'x-expected': 'an audience name such as orders' }),
          scope: Type.Optional(Type.String({ minLength: 1, description: 'Scopes asked for, space-separated (RFC 8693 scope).', 'x-expected': 'space-separated scope names' })),
          resource: Type.Optional(
            Type.String({ minLength: 1, description: 'An RFC 8707 resource asked for as well (an absolute URI).', 'x-expected': 'an absolute URI such as https://orders.example' }),
          ),
        },
        {
          additionalProperties: false,
          description:
            "token: exchange only (and required there): the user's access token is exchanged at the token endpoint (RFC 8693) for a token with this audience and scope, cached per session and audience, exchanged again when due or when the user's token changed.",
        },
      ),
    ),
    dpop: Type.Boolean({
      default: false,
      description:
        "DPoP (RFC 9449) toward this upstream: Authorization: DPoP <token> and a fresh proof per request (htm, htu, iat, jti, ath), signed with the key the token is bound to. Needs oidc.dpop: true; not with token: none or websocket: true. An upstream's use_dpop_nonce challenge is answered by replaying the request once with its nonce.",
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
    require: Type.Optional(
      Type.Object(
        {
          claims: Type.Optional(
            Type.Record(Type.String({ minLength: 1 }), Type.Array(Type.String({ minLength: 1 }), { minItems: 1 }), {
              description:
                'Claims the session must carry: each listed value must be present in the claim (an array claim must contain it, a string, number or boolean claim must equal it); else 403 insufficient_claims.',
              'x-expected': 'an object of claim names to lists of values, e.g. { groups: [admin] }',
            }),
          ),
          acr: Type.Optional(
            Type.Array(Type.String({ minLength: 1, maxLength: 200, pattern: '^[!#-\\[\\]-~]+$', 'x-expected': 'an acr value without spaces or quotes' }), {
              minItems: 1,
              description: "The session's acr must be one of these; else 401 step_up_required (a login asking for these acr_values).",
            }),
          ),
          maxAgeSeconds: Type.Optional(
            Int(0, 31_536_000, {
              description: "The session's auth_time must be no older than this many seconds; else 401 step_up_required (a login with max_age).",
            }),
          ),
        },
        {
          additionalProperties: false,
          description: 'What a session must satisfy before this route calls its upstream (all of it); needs a session (not anonymous).',
        },
      ),
    ),
    identityHeaders: Type.Record(Type.String(), Type.String({ minLength: 1, 'x-expected': 'a claim name, e.g. sub' }), {
      default: {},
      description:
        "Headers set on upstream requests from the session's ID-token claims (header name: claim name), e.g. { X-User-Sub: sub }. These names are removed from what browsers send on every route, so an upstream can trust them. A claim the session lacks sends no header; arrays are sent comma-separated.",
      'x-expected': 'an object of header names to claim names, e.g. { X-User-Sub: sub }',
    }),
    bufferResponseBytes: Int(0, 16_777_216, {
      default: 65_536,
      description:
        'Upstream responses announcing a Content-Length up to this many bytes (and a Content-Type) are read whole before they are passed on; longer ones and those without a length (streams, server-sent events) stream. 0 streams every response.',
    }),
  },
  { additionalProperties: false, description: 'An API route proxied with a token attached, or the frontend route (prefix /) that serves the SPA.' },
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

export const AdminSchema = Section(
  {
    token: Type.Optional(
      Type.String({
        minLength: 32,
        writeOnly: true,
        description:
          'Bearer token of the operator endpoints on the metrics listener (POST /admin/sessions/revoke); at least 32 characters. Without it they answer 401. Better set from the environment (TH_ADMIN_TOKEN).',
        'x-expected': 'a token of at least 32 characters',
      }),
    ),
  },
  'Operator endpoints, served on the metrics listener only.',
);

export const ErrorsSchema = Section(
  {
    pagePath: Type.Optional(
      Type.String({
        minLength: 1,
        description:
          "A path of the SPA that shows failures to people: a page load that fails (a refused sign-in, login_required, ...) is redirected there with ?error=<code>. Unset: token-handler answers such a page load with a small HTML page of its own. fetch calls get JSON either way.",
        'x-expected': 'a path on this origin such as /error',
      }),
    ),
  },
  'How failures are shown to a person whose page load failed.',
);

/**
 * A section of an app (`apps[]`): the same keys as the top-level section, every one
 * optional and without a default, because what an app leaves out it inherits from the
 * top level (where the defaults are). `omit` names keys that are process-wide.
 */
function Inherited<T extends TObject, K extends keyof Static<T> & string = never>(section: T, description: string, omit: readonly K[] = []) {
  const properties = Object.fromEntries(
    Object.entries(section.properties)
      .filter(([key]) => !(omit as readonly string[]).includes(key))
      .map(([key, schema]) => {
        const { default: _default, ...rest } = schema as TSchema & { default?: unknown };
        return [key, rest];
      }),
  );
  return Type.Optional(Type.Unsafe<Partial<Omit<Static<T>, K>>>({ type: 'object', properties, additionalProperties: false, description }));
}

/** An app's name: its label in logs and metrics, and part of its Redis keys and TH_APPS_<NAME>_* variables. */
export const APP_NAME_PATTERN = '^[a-z][a-z0-9_-]{0,31}$';

export const AppSchema = Type.Object(
  {
    name: Type.String({
      pattern: APP_NAME_PATTERN,
      description:
        'The app\'s name, unique: the app label of its metrics and log lines, part of its Redis keys, and of its variables (TH_APPS_<NAME>_<KEY>, the name upper-cased with "-" as "_").',
      'x-expected': 'a name of lower-case letters, digits, "_" and "-", starting with a letter (at most 32), e.g. shop',
    }),
    match: Type.Object(
      {
        host: Type.Optional(
          Type.String({
            pattern: '^[A-Za-z0-9.-]+$',
            description: "The Host the app answers (without a port; any port matches). Default: publicUrl's host.",
            'x-expected': 'a host name such as shop.example.com',
          }),
        ),
        pathPrefix: Type.Optional(
          Type.String({
            description:
              'Serve the app below this path on its host (/auth/*, its routes and its SPA all move below it; the redirect URI is publicUrl + pathPrefix + /auth/callback). Default: the whole host.',
            'x-expected': 'a path prefix such as /partners',
          }),
        ),
      },
      {
        additionalProperties: false,
        default: {},
        description: 'Which requests are the app\'s: by Host, or by Host and path prefix (the longest prefix wins). Each app\'s match is unique.',
      },
    ),
    publicUrl: Type.String({
      description: 'Origin the browser sees for this app, scheme://host[:port] with no path; redirect URI = publicUrl + [match.pathPrefix] + /auth/callback.',
      'x-expected': 'the origin the browser sees, e.g. https://shop.example.com',
    }),
    oidc: Inherited(OidcSchema, 'The app\'s provider and client; every key it leaves out is the top-level oidc one (except postLogoutRedirectUri, which defaults to the app\'s own publicUrl).'),
    session: Inherited(
      SessionSchema,
      "The app's session settings; every key it leaves out is the top-level session one. session.redis is process-wide (one connection set; the app's keys get its name in their prefix). Apps on one host need distinct cookie names.",
      ['redis'],
    ),
    csrf: Inherited(CsrfSchema, "The app's CSRF settings; every key it leaves out is the top-level csrf one."),
    errors: Inherited(ErrorsSchema, "The app's error page; left out: the top-level errors one."),
    routes: Type.Array(RouteSchema, {
      default: [],
      description: "The app's API routes and frontend route (prefix /), as the top-level routes of the single-app form. As a variable: TH_APPS_<NAME>_ROUTES (a JSON array).",
      'x-expected': 'a list of routes (objects with prefix and upstream)',
    }),
  },
  {
    additionalProperties: false,
    description: 'One app of a deployment serving several: its match, publicUrl, provider and client, session and CSRF settings, routes.',
  },
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
      description:
        'API routes proxied with the access token attached, and the frontend route (prefix /) serving the SPA. As a variable: a JSON array replacing the whole list.',
      'x-expected': 'a list of routes (objects with prefix and upstream)',
    }),
    refresh: RefreshSchema,
    csrf: CsrfSchema,
    logging: LoggingSchema,
    metrics: MetricsSchema,
    limits: LimitsSchema,
    shutdown: ShutdownSchema,
    rateLimit: RateLimitSchema,
    admin: AdminSchema,
    errors: ErrorsSchema,
    apps: Type.Optional(
      Type.Array(AppSchema, {
        minItems: 1,
        description:
          'Several apps in one process, each matched by Host (and optionally a path prefix) with its own publicUrl, provider and client, session, CSRF settings and routes. With apps, the top-level oidc, session, csrf and errors are the defaults every app inherits; publicUrl and routes are per app only. A request that matches no app gets 404 not_found. Per-app variables: TH_APPS_<NAME>_<KEY>, e.g. TH_APPS_SHOP_OIDC_CLIENT_SECRET.',
        'x-expected': 'a list of apps (objects with name, publicUrl, oidc, routes)',
      }),
    ),
  },
  {
    $schema: 'http://json-schema.org/draft-07/schema#',
    title: 'token-handler configuration',
    description:
      'Configuration of token-handler, a Backend-for-Frontend token handler. Every key can also be set by an environment variable: TH_ + the key path in UPPER_SNAKE_CASE (e.g. oidc.clientSecret -> TH_OIDC_CLIENT_SECRET).',
    additionalProperties: false,
  },
);
