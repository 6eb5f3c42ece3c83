/**
 * The validated configuration of one token-handler instance.
 * Every field is filled: defaults are applied by `loadConfig`, so the rest of the
 * code never has to guess. Keys and meaning follow DESIGN.md ("Configuration").
 */

export type ClientAuthMethod = 'client_secret_basic' | 'client_secret_post' | 'private_key_jwt' | 'none';
/** How client_secret_basic builds its credentials: RFC 6749 §2.3.1 form-encodes id and secret first; `plain` does not. */
export type ClientSecretBasicEncoding = 'rfc6749' | 'plain';
/** RFC 9126: `auto` pushes when the provider advertises a PAR endpoint, `always` requires one, `never` does not push. */
export type PushedAuthorizationRequests = 'auto' | 'always' | 'never';
export type SessionStoreKind = 'cookie' | 'memory' | 'redis';
export type RouteTokenMode = 'user' | 'client' | 'none';
export type SameSite = 'strict' | 'lax';
export type StripCookies = 'own' | 'all';
/** What Fastify's `trustProxy` takes, short of a function. */
export type TrustProxy = boolean | string[];
export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

export interface ListenConfig {
  host: string;
  port: number;
  /**
   * Which proxies in front are trusted to say who the client is (X-Forwarded-For): false
   * (none), a list of proxy addresses/CIDRs (behind a load balancer), or true (all: the
   * leftmost address, which any client can write). The address keys the rate limits and
   * is forwarded upstream.
   */
  trustProxy: TrustProxy;
}

export interface OidcConfig {
  /** Issuer identifier; discovery at `${issuer}/.well-known/openid-configuration`. */
  issuer: string;
  clientId: string;
  /** Required for client_secret_basic and client_secret_post. */
  clientSecret?: string;
  /** Private JWK (object) for private_key_jwt; must carry `kty` and private parts. */
  privateKeyJwk?: Record<string, unknown>;
  clientAuth: ClientAuthMethod;
  /** client_secret_basic only: `plain` for providers that do not form-decode the Basic credentials. */
  clientSecretBasicEncoding: ClientSecretBasicEncoding;
  /** Whether the authorization request is pushed to the provider first (RFC 9126). */
  pushedAuthorizationRequests: PushedAuthorizationRequests;
  scopes: string[];
  /** Refresh proactively when the access token expires within this many seconds. */
  refreshSkewSeconds: number;
  /** Timeout of every call to the provider. */
  timeoutMs: number;
  /** Access-token life assumed when the provider sends no `expires_in` and the token is not a JWT. */
  defaultAccessTokenSeconds: number;
  /** Where the provider sends the browser after RP-initiated logout; default publicUrl + "/". */
  postLogoutRedirectUri: string;
  /** Extra parameters added to the authorization request (e.g. `prompt`, `audience`). */
  authorizationParams: Record<string, string>;
  /**
   * Allow a plain-http issuer. Only for local development and tests: openid-client
   * refuses http by default, and so do we unless this is set.
   */
  allowInsecureIssuer: boolean;
  /**
   * Put `id_token_hint` in the end-session URL handed to the browser. Off by default:
   * that URL is readable by page scripts and lands in browser history, so the ID token
   * would leave the server. Some providers skip their logout confirmation with it.
   */
  logoutIdTokenHint: boolean;
}

export interface RedisConfig {
  url: string;
  keyPrefix: string;
  /**
   * Entries kept in each replica's memory — session records (store: redis), denylist
   * answers (store: cookie) — dropped the moment Redis reports a change through client
   * tracking. 0 turns the cache off.
   */
  localCacheEntries: number;
}

export interface SessionConfig {
  store: SessionStoreKind;
  /** First one seals; all of them unseal (rotation). Each at least 32 characters. */
  secrets: string[];
  /** Base name of the session cookie; `__Host-` is prepended on https. */
  cookieName: string;
  sameSite: SameSite;
  idleTimeoutSeconds: number;
  absoluteTimeoutSeconds: number;
  /** Present when Redis is configured (required for store: redis). */
  redis?: RedisConfig;
  /** How long a started login may take before its pending-login cookie is ignored. */
  pendingLoginTimeoutSeconds: number;
  /** At most this many pending logins per browser; the oldest is dropped. */
  maxPendingLogins: number;
  /** ID-token claims that `/auth/user` leaves out: protocol fields, not facts about the user. */
  omitClaims: string[];
}

export interface RouteConfig {
  /** Path prefix served by this route, e.g. `/api`. Starts with `/`, no trailing `/`. */
  prefix: string;
  /** Base URL of the upstream (http or https). */
  upstream: string;
  /** What replaces `prefix` in the upstream path ("" strips it). */
  rewritePrefix: string;
  token: RouteTokenMode;
  /**
   * `token: client` and `token: none` only: let callers without a session through. Off
   * by default: such routes need a session like `token: user` ones (401 login_required).
   */
  anonymous: boolean;
  /** On an upstream 401: refresh once and replay once (token: user only). */
  retryOn401: boolean;
  /** `own` strips only token-handler's cookies; `all` strips the whole Cookie header. */
  stripCookies: StripCookies;
  /** Scopes asked for a client-credentials token (token: client). */
  clientScopes: string[];
  /** Verify the upstream's TLS certificate. Turning it off is logged loudly at startup. */
  tlsRejectUnauthorized: boolean;
  /** PEM file of extra CA certificates trusted for this upstream. */
  tlsCaFile?: string;
  /** Time allowed to open a connection to the upstream (504 upstream_timeout after). */
  connectTimeoutMs: number;
  /** Time allowed for the upstream's response headers, and between body chunks (504 after). */
  responseTimeoutMs: number;
  /** Keep-alive connection pool size to this upstream. */
  connections: number;
  /** How long an idle upstream connection is kept open for reuse. */
  keepAliveTimeoutMs: number;
  /**
   * Upstream responses that announce a Content-Length up to this (and a Content-Type) are
   * read whole before they are passed on; longer ones, and those without a length
   * (streams, server-sent events), stream. 0 streams every response.
   */
  bufferResponseBytes: number;
}

export interface RefreshConfig {
  /**
   * How long the result of a refresh is kept, keyed by a hash of the spent refresh
   * token, so a request still carrying the old cookie gets the new tokens instead of
   * reusing a dead refresh token.
   */
  resultTtlSeconds: number;
  /** Bound on the number of remembered refresh results. */
  resultMaxEntries: number;
  /** Request bodies up to this size are buffered so they can be replayed after a 401. */
  replayBodyLimitBytes: number;
  /** `POST /auth/refresh` at most once per this many seconds per session (429 beyond); 0: no limit. */
  forcedMinIntervalSeconds: number;
}

export interface CsrfConfig {
  /** Name of the header every state-changing call must carry with the value `1`. */
  header: string;
  /** Origins besides publicUrl's own that may call (full origins, e.g. https://admin.example.com). */
  allowedOrigins: string[];
}

export interface LoggingConfig {
  level: LogLevel;
  /** Log the user's `sub` with each request (off by default: only a session hash is logged). */
  includeSubject: boolean;
  /**
   * Write request lines to stdout in batches (4 KiB, or a second after the first line held;
   * before any other line; at exit) rather than one write per request. On by default.
   */
  batchRequestLines: boolean;
}

export interface MetricsConfig {
  enabled: boolean;
  /** The separate port /metrics is served on (on listen.host), never the public listener's. */
  port: number;
  /** Serve /metrics on the main listener instead of metrics.port (it is then public). */
  onMainListener: boolean;
}

export interface LimitsConfig {
  /** Largest request body accepted on API routes (413 payload_too_large beyond); /auth takes 4 KiB at most. */
  bodyLimitBytes: number;
  /** Largest request header section accepted (431 beyond). */
  headerLimitBytes: number;
  /** Time a browser has to send a whole request, headers and body (408 or closed after). */
  requestTimeoutMs: number;
  /** Time a browser has to send the request headers. */
  headersTimeoutMs: number;
  /** How long an idle keep-alive connection is kept open between requests. */
  keepAliveTimeoutMs: number;
  /** A connection with no traffic either way for this long is closed (0: never). */
  connectionTimeoutMs: number;
}

export interface ShutdownConfig {
  /** On SIGTERM/SIGINT, in-flight requests get this long to finish. */
  gracePeriodSeconds: number;
}

export interface RateLimitConfig {
  enabled: boolean;
  /** `GET /auth/login` calls per client address per minute (429 beyond). */
  loginPerMinute: number;
  /** `GET /auth/callback` calls per client address per minute (429 beyond). */
  callbackPerMinute: number;
}

export interface Config {
  listen: ListenConfig;
  /** Origin the browser sees, without a trailing slash; redirect URI = publicUrl + /auth/callback. */
  publicUrl: string;
  oidc: OidcConfig;
  session: SessionConfig;
  routes: RouteConfig[];
  refresh: RefreshConfig;
  csrf: CsrfConfig;
  logging: LoggingConfig;
  metrics: MetricsConfig;
  limits: LimitsConfig;
  shutdown: ShutdownConfig;
  rateLimit: RateLimitConfig;
}
