import type { IncomingMessage, Server } from 'node:http';
import type { Socket } from 'node:net';
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyPluginAsync, type FastifyReply, type FastifyServerOptions } from 'fastify';
import fastifyCookie from '@fastify/cookie';
import fastifyRateLimit from '@fastify/rate-limit';
import type { Redis } from 'ioredis';
import { pino, type DestinationStream } from 'pino';
import type { Config } from './config/types.js';
import { BrowserError, loginRequired, sessionStoreUnavailable } from './errors.js';
import { OidcProvider, refreshHardTimeoutMs } from './oidc/provider.js';
import { SessionCookies } from './session/cookies.js';
import { CookiePersistence } from './session/cookie-persistence.js';
import { MemoryDenylist, RedisDenylist } from './session/denylist.js';
import { SessionManager } from './session/manager.js';
import { MemorySessionStore } from './session/memory-store.js';
import { PendingLogins } from './session/pending-login.js';
import type { SessionPersistence } from './session/persistence.js';
import { createRedis } from './session/redis-client.js';
import { RedisSessionStore } from './session/redis-store.js';
import { RedisTrackedCache } from './session/redis-tracked-cache.js';
import { Sealer } from './session/sealer.js';
import { MemorySeenOnce, RedisSeenOnce } from './session/seen-once.js';
import { ServerSidePersistence } from './session/server-side-persistence.js';
import { SessionEndedError, SessionStoreUnavailableError } from './session/store.js';
import { ClientTokens } from './tokens/client-tokens.js';
import { RedisRefreshCoordinator } from './tokens/redis-coordinator.js';
import { TokenRefresher } from './tokens/refresher.js';
import { TokenRevoker } from './tokens/revoker.js';
import { SessionTokens } from './tokens/session-tokens.js';
import { AUTH_BODY_LIMIT_BYTES, authRoutes } from './routes/auth.js';
import { backchannelLogoutRoute } from './routes/backchannel-logout.js';
import { clientModuleRoute } from './routes/client-module.js';
import { apiRoutes } from './proxy/api-routes.js';
import { makeChildLoggersLazy } from './ops/request-logger.js';
import { createCsrfCheck, createOriginCheck } from './proxy/csrf.js';
import { Cors } from './proxy/cors.js';
import { healthRoutes, type ReadinessCheck } from './ops/health.js';
import { createMetricsServer, Metrics, metricsRoute } from './ops/metrics.js';
import { RequestLines, loggableUrl, observeRequests, requestId } from './ops/request-log.js';
import { AccessLog } from './ops/access-log.js';
import { logDestination } from './ops/log-destination.js';
import { startTracing } from './ops/tracing.js';
import { traceRequests } from './ops/request-tracing.js';

export interface BuildOptions {
  /** Clock in epoch milliseconds; tests inject one to move time without sleeping. */
  now?: () => number;
  /** Where logs go (default stdout); tests capture them to scan for leaks. */
  logStream?: DestinationStream;
  /** Wait for provider discovery before resolving (tests); the service itself starts without waiting. */
  waitForProvider?: boolean;
  /** Extra Fastify plugins registered after token-handler's own routes (the demo page uses this). */
  plugins?: FastifyPluginAsync[];
}

declare module 'fastify' {
  interface FastifyInstance {
    /** Marks the instance as shutting down: `/readyz` answers 503 from now on. */
    beginShutdown(): void;
    /** The metrics of this instance. */
    metrics: Metrics;
  }
}

/** Seconds a browser is told to wait after a 503. */
const RETRY_AFTER_SECONDS = 5;
/** Upper bound on a locally cached Redis session record's life, should an invalidation be lost. */
const LOCAL_CACHE_TTL_MS = 30_000;

/**
 * Never logged. Explicit paths, not wildcards: pino's redaction runs on every log line,
 * and wildcard paths cost several times more on the hot path (one line per request).
 * The leak guard of the test suite checks that no token reaches a log line at all.
 */
export const REDACTED_PATHS = [
  'req.headers.authorization',
  'req.headers.cookie',
  'res.headers["set-cookie"]',
  'headers.authorization',
  'headers.cookie',
  'headers["set-cookie"]',
  'accessToken',
  'refreshToken',
  'idToken',
  'access_token',
  'refresh_token',
  'id_token',
  'logout_token',
  'clientSecret',
  'secrets',
  'password',
  'record.accessToken',
  'record.refreshToken',
  'record.idToken',
  'tokens.accessToken',
  'tokens.refreshToken',
  'tokens.idToken',
];

/** Builds the token-handler Fastify app from a validated configuration. */
export async function buildApp(config: Config, options: BuildOptions = {}): Promise<FastifyInstance> {
  const now = options.now ?? Date.now;
  // One destination for the application's lines and the request lines, so they stay in order.
  const ownDestination = options.logStream ? undefined : logDestination(1, config.logging.batchRequestLines);
  const logStream = options.logStream ?? ownDestination!;
  const requestLines = new RequestLines();
  const app = Fastify({
    logger: loggerOptions(config, logStream),
    // One line per request is logged by observeRequests, with session-safe fields only.
    logController: requestLines,
    genReqId: requestId,
    requestIdHeader: false,
    // What Fastify's own parsers read: token-handler's routes take small bodies, and a
    // request for no route (a 404) must not have a large one read first. The proxied routes
    // parse their bodies themselves, within limits.bodyLimitBytes.
    bodyLimit: AUTH_BODY_LIMIT_BYTES,
    // A browser that sends its headers or body slowly, or never, cannot hold a connection
    // (and its socket and parser) open for long. Node checks these timeouts every
    // connectionsCheckingInterval, so that is kept well below the shortest of them.
    http: {
      maxHeaderSize: config.limits.headerLimitBytes,
      headersTimeout: config.limits.headersTimeoutMs,
      connectionsCheckingInterval: Math.max(250, Math.min(5000, Math.floor(config.limits.headersTimeoutMs / 2))),
    },
    requestTimeout: config.limits.requestTimeoutMs,
    keepAliveTimeout: config.limits.keepAliveTimeoutMs,
    connectionTimeout: config.limits.connectionTimeoutMs,
    clientErrorHandler: answerClientError,
    trustProxy: config.listen.trustProxy,
    // Errors Fastify raises before routing (a malformed percent-encoding in the path, …)
    // get our JSON shape too.
    frameworkErrors: (_error: Error, _request: unknown, reply: FastifyReply) =>
      sendError(reply, new BrowserError('bad_request', 'The request URL could not be understood.')),
    return503OnClosing: true,
  } as FastifyServerOptions);
  // Each request's logger is made when it first writes a line (most never do).
  makeChildLoggersLazy(app.log);

  const secure = config.publicUrl.startsWith('https:');
  // Off (no SDK, no hook) unless the OTEL_* environment configures an exporter; before any route, whose hooks it adds.
  const tracing = await startTracing(app.log);
  if (tracing) traceRequests(app, tracing, secure ? 'https' : 'http');
  if (!secure) {
    app.log.warn({ publicUrl: config.publicUrl }, 'publicUrl is plain http: session cookies lose the __Host- prefix and Secure (local development only)');
  }
  if (config.session.store === 'cookie' && !config.session.redis) {
    app.log.warn(
      'session.store "cookie" without session.redis: logouts are remembered by this process only — a back-channel logout or a logout is forgotten on restart and never reaches another replica. Configure session.redis (or use store: redis) for more than one replica or for logouts that survive a restart',
    );
  }
  for (const route of config.routes) {
    if (!route.tlsRejectUnauthorized) {
      app.log.warn({ route: route.prefix, upstream: route.upstream }, 'TLS certificate verification is OFF for this upstream (routes[].tlsRejectUnauthorized: false)');
    }
  }

  const provider = new OidcProvider({ config: config.oidc, redirectUri: `${config.publicUrl}/auth/callback`, logger: app.log, now });
  // Sessions unsealed once per cookie value and remembered until the seal itself expires, by
  // Date.now (iron checks a seal against real time, not the test clock).
  const sealer = new Sealer(config.session.secrets, { cacheEntries: 10_000 });
  const cookies = new SessionCookies({ secure, cookieName: config.session.cookieName, sameSite: config.session.sameSite });
  const timeouts = {
    idleTimeoutSeconds: config.session.idleTimeoutSeconds,
    absoluteTimeoutSeconds: config.session.absoluteTimeoutSeconds,
  };
  const redis = config.session.redis ? createRedis(config.session.redis.url, app.log) : undefined;
  const { persistence, countSessions } = createPersistence(config, sealer, now, redis, app.log);
  const metrics = new Metrics(countSessions);
  const sessions = new SessionManager({ cookies, persistence, timeouts, now, logger: app.log, metrics });
  const refreshSkewMs = config.oidc.refreshSkewSeconds * 1000;
  const refresher = new TokenRefresher({
    provider,
    resultTtlMs: config.refresh.resultTtlSeconds * 1000,
    resultMaxEntries: config.refresh.resultMaxEntries,
    refreshSkewMs,
    waitMs: config.oidc.timeoutMs,
    now,
    logger: app.log,
    metrics,
    ...(redis && config.session.redis
      ? {
          coordinator: new RedisRefreshCoordinator({
            redis,
            keyPrefix: config.session.redis.keyPrefix,
            sealer,
            resultTtlMs: config.refresh.resultTtlSeconds * 1000,
            lockTtlMs: Math.max(5000, config.oidc.timeoutMs * 2),
            maxWaitMs: refreshHardTimeoutMs(config.oidc.timeoutMs) + config.oidc.timeoutMs,
            pollIntervalMs: 10,
            now: Date.now,
          }),
        }
      : {}),
  });
  const revoker = new TokenRevoker(provider, now);
  const sessionTokens = new SessionTokens({ sessions, refresher, revoker, refreshSkewMs, now, retryAfterSeconds: RETRY_AFTER_SECONDS });
  const pendingLogins = new PendingLogins({
    cookies,
    sealer,
    timeoutSeconds: config.session.pendingLoginTimeoutSeconds,
    maxPerBrowser: config.session.maxPendingLogins,
    now,
  });
  const csrfCheck = createCsrfCheck(config.csrf, config.publicUrl);
  const originCheck = createOriginCheck(config.csrf, config.publicUrl);
  const cors = new Cors(config.csrf, config.csrf.header);

  let shuttingDown = false;
  app.decorate('beginShutdown', () => {
    shuttingDown = true;
  });
  app.decorate('metrics', metrics);
  app.decorateRequest('session', null);

  // Cookies are parsed where they are read (SessionCookies.received), not by a hook on every request.
  await app.register(fastifyCookie, { hook: false });
  app.setErrorHandler((error, request, reply) => {
    // The browser went away mid-body: nobody to answer, and nothing went wrong here.
    if (browserAborted(error, request.raw)) {
      metrics.requestAborted();
      request.log.info({ err: { message: (error as Error).message, code: (error as { code?: unknown }).code } }, 'request aborted: the browser went away before sending the whole body');
      // Fastify reports no completed request for it: its request line is written here.
      requestLines.observe?.(request, reply, true);
      if (!reply.raw.headersSent) reply.raw.destroy();
      return reply;
    }
    const browserError = toBrowserError(error);
    if (browserError.status >= 500 && !(error instanceof BrowserError)) {
      request.log.error({ err: error }, 'unhandled error');
    }
    if (browserError.retryAfterSeconds !== undefined) reply.header('retry-after', String(browserError.retryAfterSeconds));
    return sendError(reply, browserError);
  });
  app.setNotFoundHandler((_request, reply) => sendError(reply, new BrowserError('not_found', 'No route here.')));
  // Called directly, not registered: it decorates every request of the app and feeds on Fastify's completed-request calls.
  observeRequests(app, requestLines, {
    metrics,
    accessLog: new AccessLog(logStream, config.logging.level),
    includeSubject: config.logging.includeSubject,
    routePrefixes: config.routes.map((r) => r.prefix),
  });

  const checks: ReadinessCheck[] = [
    { name: 'provider', check: () => provider.ready },
    { name: 'shutdown', check: () => !shuttingDown },
  ];
  if (redis) checks.push({ name: 'session_store', check: async () => (await redis.ping()) === 'PONG' });
  await app.register(healthRoutes, { checks });
  if (config.metrics.enabled && config.metrics.onMainListener) await app.register(metricsRoute, { metrics });

  if (config.rateLimit.enabled) {
    await app.register(fastifyRateLimit, {
      global: false,
      // Counted in Redis when replicas share one; a Redis outage never blocks logins.
      ...(redis ? { redis, nameSpace: `${config.session.redis!.keyPrefix}ratelimit:`, skipOnError: true } : {}),
      errorResponseBuilder: (_request, context) =>
        Object.assign(new BrowserError('too_many_requests', `Too many sign-in attempts from this address: try again in ${context.after}.`), {
          statusCode: 429,
        }),
    });
  }
  await app.register(authRoutes, {
    rateLimit: config.rateLimit,
    provider,
    sessions,
    sessionTokens,
    refresher,
    revoker,
    waitMs: config.oidc.timeoutMs,
    pendingLogins,
    timeouts,
    omitClaims: config.session.omitClaims,
    csrfCheck,
    originCheck,
    cors,
    forcedRefreshIntervalMs: config.refresh.forcedMinIntervalSeconds * 1000,
    publicUrl: config.publicUrl,
    retryAfterSeconds: RETRY_AFTER_SECONDS,
    now,
    metrics,
  });
  // GET /auth/client.js: the browser helper SPAs import.
  await app.register(clientModuleRoute);
  await app.register(backchannelLogoutRoute, {
    provider,
    sessions,
    seenOnce: redis && config.session.redis ? new RedisSeenOnce(redis, config.session.redis.keyPrefix) : new MemorySeenOnce(10_000, now),
    retryAfterSeconds: RETRY_AFTER_SECONDS,
  });
  await app.register(apiRoutes, {
    routes: config.routes,
    cookies,
    sessions,
    sessionTokens,
    clientTokens: new ClientTokens(provider, refreshSkewMs, now),
    csrfCheck,
    csrfHeader: config.csrf.header,
    cors,
    publicProto: secure ? 'https' : 'http',
    publicHost: new URL(config.publicUrl).host,
    replayBodyLimitBytes: config.refresh.replayBodyLimitBytes,
    bodyLimitBytes: config.limits.bodyLimitBytes,
    retryAfterSeconds: RETRY_AFTER_SECONDS,
    browserLeft: (request, reply) => requestLines.browserLeft(request, reply),
  });

  for (const plugin of options.plugins ?? []) await app.register(plugin);

  let metricsServer: Server | undefined;
  if (config.metrics.enabled && !config.metrics.onMainListener) {
    const port = config.metrics.port;
    metricsServer = createMetricsServer(metrics);
    app.addHook('onListen', async () => {
      // Listening already (a second listen of the same app): nothing to do.
      if (metricsServer!.listening) return;
      await new Promise<void>((resolve, reject) => {
        metricsServer!.once('error', reject).listen(port, config.listen.host, () => resolve());
      });
      const address = metricsServer!.address();
      app.log.info({ port: typeof address === 'object' && address ? address.port : port }, 'metrics served on a separate port');
    });
  }

  app.addHook('onClose', async () => {
    ownDestination?.close();
    provider.stop();
    await persistence.close();
    if (redis) await redis.quit().catch(() => redis.disconnect());
    if (metricsServer?.listening) await new Promise((resolve) => metricsServer!.close(resolve));
    // Last, so the spans of everything above are exported too.
    await tracing?.shutdown();
  });

  const discovery = provider.start();
  if (options.waitForProvider) await discovery;
  return app;
}

function createPersistence(
  config: Config,
  sealer: Sealer,
  now: () => number,
  redis: Redis | undefined,
  logger: FastifyBaseLogger,
): { persistence: SessionPersistence; countSessions?: () => Promise<number | undefined> } {
  const maxTtl = config.session.absoluteTimeoutSeconds;
  // At most one per replica, made only for the store that reads through it (and closes it):
  // Redis's tracking redirect is per connection.
  const trackedCache = (redis: Redis, entries: number) =>
    entries > 0 ? new RedisTrackedCache({ redis, maxEntries: entries, ttlMs: LOCAL_CACHE_TTL_MS, logger }) : undefined;
  switch (config.session.store) {
    case 'cookie': {
      // Ended sessions must stay refused for as long as a copied cookie could live.
      const denylist =
        redis && config.session.redis
          ? new RedisDenylist(redis, config.session.redis.keyPrefix, maxTtl * 1000, trackedCache(redis, config.session.redis.localCacheEntries))
          : new MemoryDenylist(maxTtl * 1000, now);
      return { persistence: new CookiePersistence(sealer, maxTtl, denylist) };
    }
    case 'memory': {
      const store = new MemorySessionStore(now);
      return { persistence: new ServerSidePersistence('memory', store, sealer, maxTtl), countSessions: () => store.count() };
    }
    case 'redis': {
      if (!redis || !config.session.redis) throw new Error('session.store "redis" needs session.redis.url');
      const localCache = trackedCache(redis, config.session.redis.localCacheEntries);
      const store = new RedisSessionStore({ redis, keyPrefix: config.session.redis.keyPrefix, sealer, absoluteTimeoutSeconds: maxTtl, ...(localCache ? { localCache } : {}) });
      return { persistence: new ServerSidePersistence('redis', store, sealer, maxTtl) };
    }
  }
}

/**
 * A request body that broke off because the browser left (its socket closed mid-body),
 * as opposed to one that was refused or failed to parse.
 */
function browserAborted(error: unknown, raw: IncomingMessage): boolean {
  const code = (error as { code?: unknown }).code;
  return raw.aborted || ((code === 'ECONNRESET' || code === 'ERR_STREAM_PREMATURE_CLOSE' || code === 'FST_ERR_CTP_INVALID_CONTENT_LENGTH') && raw.destroyed);
}

/** token-handler's own error answers: JSON, never cached, never sniffed as something else. */
function sendError(reply: FastifyReply, error: BrowserError): FastifyReply {
  // Refused before its body was read: close the connection after the answer rather than
  // read (and discard) a body nobody wants.
  if (reply.request.raw.complete === false) reply.header('connection', 'close');
  return reply
    .code(error.status)
    .header('x-request-id', reply.request.id)
    .header('cache-control', 'no-store')
    .header('x-content-type-options', 'nosniff')
    .type('application/json; charset=utf-8')
    .send(error.toJSON());
}

/** Every error becomes one of the browser-facing codes; Fastify's own 4xx keep their status class. */
function toBrowserError(error: unknown): BrowserError {
  if (error instanceof BrowserError) return error;
  if (error instanceof SessionStoreUnavailableError) return sessionStoreUnavailable();
  if (error instanceof SessionEndedError) return loginRequired('The session has ended: sign in again.');
  const status = (error as { statusCode?: unknown }).statusCode;
  if (status === 413) return new BrowserError('payload_too_large', 'The request body is too large.');
  if (status === 431) return new BrowserError('headers_too_large', 'The request headers are too large.');
  if (status === 429) return new BrowserError('too_many_requests', 'Too many requests: slow down.');
  if (typeof status === 'number' && status >= 400 && status < 500) {
    return new BrowserError('bad_request', 'The request could not be understood.');
  }
  return new BrowserError('internal_error', 'Something went wrong in token-handler; the error has been logged.');
}

/**
 * Errors Node's HTTP parser raises before Fastify sees a request (oversized headers,
 * malformed requests): answered as JSON like every other error, then the socket closes.
 */
function answerClientError(error: Error & { code?: string }, socket: Socket): void {
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  const answer = clientErrorAnswer(error.code);
  const body = JSON.stringify(answer.error.toJSON());
  const status = answer.status;
  socket.end(
    `HTTP/1.1 ${status}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  );
}

/** The answer to an error Node's HTTP server raised, by its code. */
function clientErrorAnswer(code: string | undefined): { error: BrowserError; status: string } {
  switch (code) {
    case 'HPE_HEADER_OVERFLOW':
      return { error: new BrowserError('headers_too_large', 'The request headers are too large.'), status: '431 Request Header Fields Too Large' };
    // limits.headersTimeoutMs or limits.requestTimeoutMs ran out before the request was whole.
    case 'ERR_HTTP_REQUEST_TIMEOUT':
    case 'ERR_HTTP_HEADERS_TIMEOUT':
      return { error: new BrowserError('request_timeout', 'The request was not sent in time.'), status: '408 Request Timeout' };
    default:
      return { error: new BrowserError('bad_request', 'The request could not be parsed.'), status: '400 Bad Request' };
  }
}

function loggerOptions(config: Config, stream: DestinationStream): FastifyServerOptions['logger'] {
  return {
    level: config.logging.level,
    redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
    serializers: {
      req: (req: { method: string; url: string; id: string }) => ({ method: req.method, url: loggableUrl(req.url), reqId: req.id }),
    },
    stream,
  };
}
