import type { IncomingMessage, Server } from 'node:http';
import type { FastifyBaseLogger, FastifyPluginAsync } from 'fastify';
import fastifyCookie from '@fastify/cookie';
import fastifyRateLimit from '@fastify/rate-limit';
import type { Config } from './config/types.js';
import { BrowserError } from './errors.js';
import { browserErrorOf, sendError } from './failures.js';
import { OidcProvider, refreshHardTimeoutMs } from './oidc/provider.js';
import { DpopKeys, readDpopKeyFile } from './oidc/dpop.js';
import { SessionCookies } from './session/cookies.js';
import { SessionManager } from './session/manager.js';
import { persistenceFor } from './session/persistence-for.js';
import { PendingLogins } from './session/pending-login.js';
import { createState, type SharedState } from './state/index.js';
import { Sealer } from './state/sealer.js';
import { ClientTokens } from './tokens/client-tokens.js';
import { ExchangeTokens, exchangeKey } from './tokens/exchange-tokens.js';
import type { ApiTokenRoute } from './session/record.js';
import { TokenRefresher } from './tokens/refresher.js';
import { TokenRevoker } from './tokens/revoker.js';
import { SessionTokens } from './tokens/session-tokens.js';
import { authRoutes } from './routes/auth.js';
import { backchannelLogoutRoute } from './routes/backchannel-logout.js';
import { clientModuleRoute } from './routes/client-module.js';
import { apiRoutes } from './proxy/api-routes.js';
import { apiRoutesOf, createFrontend, frontendRouteOf } from './frontend/index.js';
import { useErrorPages } from './pages/error-page.js';
import { createCsrfCheck, createOriginCheck, createUpgradeOriginCheck } from './proxy/csrf.js';
import { Cors } from './proxy/cors.js';
import { healthRoutes, type ReadinessCheck } from './ops/health.js';
import { createMetricsServer, Metrics, metricsRoute } from './ops/metrics.js';
import { RequestLines, observeRequests } from './ops/request-log.js';
import { AccessLog } from './ops/access-log.js';
import { adminHandler, type AdminMatch } from './ops/admin.js';
import { sessionsRoutes } from './routes/sessions.js';
import { eventsRoute } from './routes/events.js';
import { SessionChannels } from './session/channels.js';
import { startTracing } from './ops/tracing.js';
import { traceRequests } from './ops/request-tracing.js';

/** Options of the plugin: a validated configuration (see `loadConfig`), and for tests a clock. */
export type TokenHandlerOptions = Config & {
  /** Clock in epoch milliseconds; tests inject one to move time without sleeping. */
  now?: () => number;
  /** Resolve the registration only once the provider's metadata is loaded. */
  waitForProvider?: boolean;
};

/** What the standalone server (buildApp) hands the plugin: its request-line controller and access log. */
export interface ServerBinding {
  requestLines: RequestLines;
  accessLog: AccessLog;
}
export const kServerBinding = Symbol('token-handler server binding');

declare module 'fastify' {
  interface FastifyInstance {
    /** Marks the instance as shutting down: `/readyz` answers 503 from now on. */
    beginShutdown(): void;
    /** The metrics of this instance. */
    metrics: Metrics;
    /**
     * The state this instance keeps beyond one request (session store, denylist, …), for
     * tools such as the bench (which seeds synthetic sessions into a running instance's
     * store). Not an API for applications: reach sessions through `/auth/*`.
     */
    tokenHandlerState: SharedState;
  }
}

/** Seconds a browser is told to wait after a 503. */
const RETRY_AFTER_SECONDS = 5;

/**
 * token-handler as a Fastify plugin: `/auth/*`, the API routes, health and metrics, with
 * their own error answers, registered on an existing Fastify server —
 * `app.register(tokenHandler, await loadConfig(...))`. Registered as it is, it is
 * encapsulated: its error handler and hooks apply to its own routes only, and the host's
 * routes, logger and 404 stay the host's. Server-level settings (`listen.*`, `limits.*`
 * timeouts and header size, trustProxy) are the host's own in that case; `buildApp` sets
 * them for the standalone server.
 */
export const tokenHandler: FastifyPluginAsync<TokenHandlerOptions> = async (app, options) => {
  const config: Config = options;
  const now = options.now ?? Date.now;
  const binding = (options as { [kServerBinding]?: ServerBinding })[kServerBinding];
  // In a host server, Fastify's request-completed calls go to the host's controller: our
  // request lines and metrics then come from a hook on our own routes.
  const requestLines = binding?.requestLines ?? new RequestLines();
  if (!binding) app.addHook('onResponse', async (request, reply) => requestLines.observe?.(request, reply, false));


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
  const apiRouteConfigs = apiRoutesOf(config.routes);
  const frontendRoute = frontendRouteOf(config.routes);
  for (const route of apiRouteConfigs) {
    if (!route.tlsRejectUnauthorized) {
      app.log.warn({ route: route.prefix, upstream: route.upstream }, 'TLS certificate verification is OFF for this upstream (routes[].tlsRejectUnauthorized: false)');
    }
  }

  // RFC 8707: login asks for every configured resource; metrics name a resource by its route(s).
  const resources = [...new Set(config.routes.flatMap((route) => (route.token === 'user' && route.resource !== undefined ? [route.resource] : [])))];
  const routesOfResource = new Map(resources.map((resource) => [resource, config.routes.filter((route) => route.resource === resource).map((route) => route.prefix).join(',')]));
  // DPoP: per-session keys (or the configured key) and the process key of client tokens.
  const dpopKeys = config.oidc.dpop ? new DpopKeys(config.oidc.dpopKeyFile === undefined ? undefined : readDpopKeyFile(config.oidc.dpopKeyFile)) : undefined;
  const dpopKeyOf = dpopKeys ? (record: { dpopKey?: string }) => dpopKeys.forSession(record) : undefined;
  if (dpopKeys) {
    app.log.info({ keys: dpopKeys.perSession ? 'per session (ES256)' : 'configured', alg: dpopKeys.processKey.alg }, 'DPoP on: token-endpoint calls carry DPoP proofs');
    for (const route of apiRouteConfigs) {
      if (!route.dpop && route.token !== 'none') {
        app.log.warn(
          { route: route.prefix, check: [`routes[].dpop`] },
          'oidc.dpop is on but this route has dpop: false: its DPoP-bound tokens go as Bearer without a proof, which an API verifying DPoP refuses (set dpop: true for such APIs)',
        );
      }
    }
  }
  const provider = new OidcProvider({
    config: config.oidc,
    redirectUri: `${config.publicUrl}/auth/callback`,
    logger: app.log,
    now,
    resources,
    ...(dpopKeys ? { dpopAlgorithm: dpopKeys.processKey.alg } : {}),
  });
  // Sessions unsealed once per cookie value and remembered until the seal itself expires, by
  // Date.now (iron checks a seal against real time, not the test clock). A cookie-store entry
  // holds a whole record (~7 KiB with its seal); a server-side store's, a session id (~0.5 KiB).
  const sealer = new Sealer(config.session.secrets, { cacheEntries: config.session.store === 'cookie' ? 10_000 : 50_000 });
  const cookies = new SessionCookies({ secure, cookieName: config.session.cookieName, sameSite: config.session.sameSite });
  const timeouts = {
    idleTimeoutSeconds: config.session.idleTimeoutSeconds,
    absoluteTimeoutSeconds: config.session.absoluteTimeoutSeconds,
  };
  const state = createState({
    session: config.session,
    sealer,
    refreshResultTtlMs: config.refresh.resultTtlSeconds * 1000,
    refreshLockTtlMs: Math.max(5000, config.oidc.timeoutMs * 2),
    refreshMaxWaitMs: refreshHardTimeoutMs(config.oidc.timeoutMs) + config.oidc.timeoutMs,
    now,
    logger: app.log,
  });
  const persistence = persistenceFor(config.session.store, state, sealer, config.session.absoluteTimeoutSeconds);
  const metrics = new Metrics(state.countSessions, state.redis);
  const sessions = new SessionManager({ cookies, persistence, timeouts, now, logger: app.log, metrics, signals: state.signals });
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
    routeOfResource: (resource) => routesOfResource.get(resource) ?? resource,
    ...(state.refreshCoordinator ? { coordinator: state.refreshCoordinator } : {}),
    ...(dpopKeyOf ? { dpopKeyOf } : {}),
  });
  const revoker = new TokenRevoker(provider, now);
  const sessionTokens = new SessionTokens({ sessions, refresher, revoker, refreshSkewMs, now, retryAfterSeconds: RETRY_AFTER_SECONDS });
  const exchangeTokens = new ExchangeTokens({
    provider,
    sessions,
    sessionTokens,
    resultTtlMs: config.refresh.resultTtlSeconds * 1000,
    refreshSkewMs,
    now,
    retryAfterSeconds: RETRY_AFTER_SECONDS,
    metrics,
    ...(state.refreshCoordinator ? { coordinator: state.refreshCoordinator } : {}),
    ...(dpopKeyOf ? { dpopKeyOf } : {}),
  });
  const pendingLogins = new PendingLogins({
    cookies,
    sealer,
    timeoutSeconds: config.session.pendingLoginTimeoutSeconds,
    maxPerBrowser: config.session.maxPendingLogins,
    now,
  });
  const csrfCheck = createCsrfCheck(config.csrf, config.publicUrl);
  const originCheck = createOriginCheck(config.csrf, config.publicUrl);
  // WebSockets, streamed responses and /auth/events streams of sessions on this replica, ended with their session (on any replica).
  const channels = new SessionChannels({ signals: state.signals, sessions, timeouts, now, logger: app.log });
  if (apiRouteConfigs.some((route) => route.websocket)) channels.start();
  // Open sockets and streams would hold the server open: they end first, with 1001 (going away).
  app.addHook('preClose', async () => channels.endAll('shutdown'));
  const cors = new Cors(config.csrf, config.csrf.header);

  let shuttingDown = false;
  app.decorate('beginShutdown', () => {
    shuttingDown = true;
  });
  app.decorate('metrics', metrics);
  // For tools such as the bench: see the declaration above.
  app.decorate('tokenHandlerState', state);
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
    const browserError = browserErrorOf(error);
    if (browserError.status >= 500 && !(error instanceof BrowserError)) {
      request.log.error({ err: error }, 'unhandled error');
    }
    if (browserError.retryAfterSeconds !== undefined) reply.header('retry-after', String(browserError.retryAfterSeconds));
    return sendError(reply, browserError);
  });
  const publicProto = secure ? 'https' : 'http';
  const publicHost = new URL(config.publicUrl).host;
  const frontend = frontendRoute
    ? createFrontend({
        route: frontendRoute,
        apiPrefixes: apiRouteConfigs.map((route) => route.prefix),
        policy: { cookies, stripCookies: frontendRoute.stripCookies, csrfHeader: config.csrf.header },
        publicProto,
        publicHost,
      })
    : undefined;
  useErrorPages(app, { pagePath: config.errors.pagePath });
  // A host server keeps its own 404 for paths that are not ours, unless the frontend route makes every path ours.
  if (binding || frontend) {
    app.setNotFoundHandler((request, reply) => frontend?.pageFallback(request, reply) ?? sendError(reply, new BrowserError('not_found', 'No route here.')));
  }
  // Called directly, not registered: it decorates every request of the app and feeds on Fastify's
  // completed-request calls (in a host server, on an onResponse hook of the plugin's routes).
  observeRequests(app, requestLines, {
    metrics,
    accessLog: binding?.accessLog ?? AccessLog.off(),
    includeSubject: config.logging.includeSubject,
    routePrefixes: apiRouteConfigs.map((r) => r.prefix),
  });

  const checks: ReadinessCheck[] = [
    { name: 'provider', check: () => provider.ready },
    { name: 'shutdown', check: () => !shuttingDown },
  ];
  const redis = state.redis;
  if (redis) {
    const details = () => ({ topology: redis.topology, reconnects: redis.events.reconnects, failovers: redis.events.failovers });
    checks.push({ name: 'session_store', check: () => state.ping(), details });
  }
  await app.register(healthRoutes, { checks });
  if (config.metrics.enabled && config.metrics.onMainListener) await app.register(metricsRoute, { metrics });

  if (config.rateLimit.enabled) {
    await app.register(fastifyRateLimit, {
      global: false,
      // Counted in Redis when replicas share one; a Redis outage never blocks logins.
      ...(state.rateLimit ? { ...state.rateLimit, skipOnError: true } : {}),
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
    apiTokenRoutes: config.routes.flatMap((route): ApiTokenRoute[] => {
      if (route.token === 'user' && route.resource !== undefined) return [{ prefix: route.prefix, kind: 'resource', key: route.resource }];
      if (route.token === 'exchange' && route.exchange) return [{ prefix: route.prefix, kind: 'exchange', key: exchangeKey(route.exchange) }];
      return [];
    }),
    keepUserAgent: state.sessionStore !== undefined,
    csrfCheck,
    originCheck,
    cors,
    forcedRefreshIntervalMs: config.refresh.forcedMinIntervalSeconds * 1000,
    publicUrl: config.publicUrl,
    retryAfterSeconds: RETRY_AFTER_SECONDS,
    now,
    metrics,
    allowedAcrValues: new Set([...config.oidc.allowedAcrValues, ...config.routes.flatMap((route) => route.require?.acr ?? [])]),
    dpopKeys,
  });
  await app.register(sessionsRoutes, { sessions, store: state.sessionStore, revoker, timeouts, now, csrfCheck, originCheck });
  await app.register(eventsRoute, { sessions, channels, originCheck, maxStreamsPerSession: config.session.maxEventStreams });
  // GET /auth/client.js: the browser helper SPAs import.
  await app.register(clientModuleRoute);
  await app.register(backchannelLogoutRoute, {
    provider,
    sessions,
    seenOnce: state.seenOnce,
    retryAfterSeconds: RETRY_AFTER_SECONDS,
  });
  await app.register(apiRoutes, {
    routes: apiRouteConfigs,
    cookies,
    sessions,
    sessionTokens,
    clientTokens: new ClientTokens(provider, refreshSkewMs, now, dpopKeys?.processKey),
    dpopKeys,
    exchangeTokens,
    csrfCheck,
    csrfHeader: config.csrf.header,
    cors,
    publicProto,
    publicHost,
    replayBodyLimitBytes: config.refresh.replayBodyLimitBytes,
    bodyLimitBytes: config.limits.bodyLimitBytes,
    retryAfterSeconds: RETRY_AFTER_SECONDS,
    browserLeft: (request, reply) => requestLines.browserLeft(request, reply),
    publicUrl: config.publicUrl,
    now,
    channels,
    upgradeOriginCheck: createUpgradeOriginCheck(config.csrf, config.publicUrl),
    maxSocketsPerSession: config.session.maxWebSockets,
    metrics,
  });
  // The catch-all, below every route above.
  await frontend?.register(app);

  let metricsServer: Server | undefined;
  if (config.metrics.enabled && !config.metrics.onMainListener) {
    const port = config.metrics.port;
    // Ends the matching sessions everywhere and revokes their grants where the store holds them.
    const revokeMatching = async (match: AdminMatch, log: FastifyBaseLogger): Promise<{ ended: number | null }> => {
      const store = state.sessionStore;
      if (!store) {
        await sessions.endProviderSessions(match, log, 'elsewhere');
        return { ended: null };
      }
      let ended = 0;
      for (const id of 'sid' in match ? await store.findBySid(match.sid) : await store.findBySub(match.sub)) {
        const record = await store.get(id);
        if (!record) continue;
        const last = await sessions.endSession(record, 'elsewhere', log);
        await revoker.revoke([record, last], log, 'ended by an operator');
        ended++;
      }
      return { ended };
    };
    metricsServer = createMetricsServer(metrics, adminHandler({ token: config.admin.token, revoke: revokeMatching, logger: app.log }));
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
    channels.close();
    provider.stop();
    await state.close();
    if (metricsServer?.listening) await new Promise((resolve) => metricsServer!.close(resolve));
    // Last, so the spans of everything above are exported too.
    await tracing?.shutdown();
  });

  const discovery = provider.start();
  if (options.waitForProvider) await discovery;
};

/**
 * A request body that broke off because the browser left (its socket closed mid-body),
 * as opposed to one that was refused or failed to parse.
 */
function browserAborted(error: unknown, raw: IncomingMessage): boolean {
  const code = (error as { code?: unknown }).code;
  return raw.aborted || ((code === 'ECONNRESET' || code === 'ERR_STREAM_PREMATURE_CLOSE' || code === 'FST_ERR_CTP_INVALID_CONTENT_LENGTH') && raw.destroyed);
}
