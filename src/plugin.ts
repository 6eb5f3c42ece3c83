import type { IncomingMessage, Server } from 'node:http';
import type { FastifyBaseLogger, FastifyInstance, FastifyPluginAsync, FastifyRequest } from 'fastify';
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
import { connectSharedRedis, createState, type SharedRedis, type SharedState } from './state/index.js';
import { appSealingSecrets, Sealer } from './state/sealer.js';
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
import { apiRoutesOf, createFrontend, frontendRouteOf, type Frontend } from './frontend/index.js';
import { useErrorPages } from './pages/error-page.js';
import { createCsrfCheck, createOriginCheck, createUpgradeOriginCheck } from './proxy/csrf.js';
import { Cors } from './proxy/cors.js';
import { healthRoutes, type ReadinessCheck } from './ops/health.js';
import { createMetricsServer, Metrics, metricsRoute, ProcessMetrics } from './ops/metrics.js';
import { RequestLines, observeRequests, observedApp, type ObservedApp } from './ops/request-log.js';
import { AccessLog } from './ops/access-log.js';
import { adminHandler, type AdminMatch } from './ops/admin.js';
import { sessionsRoutes } from './routes/sessions.js';
import { eventsRoute } from './routes/events.js';
import { SessionChannels } from './session/channels.js';
import { startTracing } from './ops/tracing.js';
import { traceRequests } from './ops/request-tracing.js';
import { appsOf, type ResolvedApp } from './config/apps.js';
import { APP_HOST_CONSTRAINT, AppMatcher, appHostStrategy } from './app-match.js';

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
    /** The metrics of this instance (every app's, and the process's). */
    metrics: ProcessMetrics;
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

/** The app an app scope serves: on its encapsulated instance, read by the request lines and the 404 handler. */
const kApp = Symbol('token-handler app');

/**
 * token-handler as a Fastify plugin: `/auth/*`, the API routes, health and metrics, with
 * their own error answers, registered on an existing Fastify server —
 * `app.register(tokenHandler, await loadConfig(...))`. Registered as it is, it is
 * encapsulated: its error handler and hooks apply to its own routes only, and the host's
 * routes, logger and 404 stay the host's. Server-level settings (`listen.*`, `limits.*`
 * timeouts and header size, trustProxy) are the host's own in that case; `buildApp` sets
 * them for the standalone server.
 *
 * With `apps:` it serves several apps: what is one per process (tracing, the Redis
 * connections, health, metrics, the admin endpoint, the error handler and 404) is made
 * here once, and each app (`composeApp`) gets its own provider, sealing, state, session
 * manager and routes, registered in an encapsulated scope of its own whose every route
 * carries the app's Host constraint (and below its path prefix), so its hooks and checks
 * apply to its routes alone. The single-app form is one app with no constraint.
 */
export const tokenHandler: FastifyPluginAsync<TokenHandlerOptions> = async (app, options) => {
  const config: Config = options;
  const now = options.now ?? Date.now;
  const binding = (options as { [kServerBinding]?: ServerBinding })[kServerBinding];
  // In a host server, Fastify's request-completed calls go to the host's controller: our
  // request lines and metrics then come from a hook on our own routes.
  const requestLines = binding?.requestLines ?? new RequestLines();
  if (!binding) app.addHook('onResponse', async (request, reply) => requestLines.observe?.(request, reply, false));

  const resolved = appsOf(config);
  const several = config.apps !== undefined;
  // Routes of an app answer its Host alone: a router constraint (any port).
  if (several && !app.hasConstraintStrategy(APP_HOST_CONSTRAINT)) app.addConstraintStrategy(appHostStrategy);
  // Off (no SDK, no hook) unless the OTEL_* environment configures an exporter; before any route, whose hooks it adds.
  const tracing = await startTracing(app.log);
  if (tracing) traceRequests(app, tracing, resolved.every((one) => one.config.publicUrl.startsWith('https:')) ? 'https' : 'http');
  // With several apps, one Redis connection set for all of them (each app's keys under its own prefix).
  const sharedRedis = several && config.session.redis ? connectSharedRedis(config.session.redis, app.log) : undefined;

  let shuttingDown = false;
  const apps: ComposedApp[] = [];
  const matcher = new AppMatcher(resolved);
  for (const one of resolved) {
    apps.push(composeApp(app, one, { several, now, sharedRedis, requestLines, otherAppPrefixes: matcher.prefixesBelow(one.host, one.pathPrefix) }));
  }
  const first = apps[0]!;
  const processMetrics = new ProcessMetrics(sharedRedis ? { topology: sharedRedis.connection.topology, events: sharedRedis.connection.events } : first.state.redis);
  for (const one of apps) processMetrics.add(one.metrics);
  // Requests of no app (health probes, /metrics, a Host no app answers): counted apart, with an empty app label.
  const unmatched = several ? observedApp({ metrics: new Metrics({ app: '' }), name: undefined, pathPrefix: '', routePrefixes: [] }) : first.observed;
  if (several) processMetrics.add(unmatched.metrics);

  app.decorate('beginShutdown', () => {
    shuttingDown = true;
  });
  app.decorate('metrics', processMetrics);
  // For tools such as the bench: see the declaration above (the first app's, with several).
  app.decorate('tokenHandlerState', first.state);
  app.decorateRequest('session', null);
  app.decorateRequest('tokenHandlerApp', null);

  /** The app of a request: a constant with one app; with several, its route's app scope (or what the 404 handler found). */
  const appOf: (request: FastifyRequest) => ObservedApp = several
    ? (request) => request.tokenHandlerApp?.observed ?? (request.server as unknown as { [kApp]?: ComposedApp })[kApp]?.observed ?? unmatched
    : () => first.observed;

  app.setErrorHandler((error, request, reply) => {
    // The browser went away mid-body: nobody to answer, and nothing went wrong here.
    if (browserAborted(error, request.raw)) {
      appOf(request).metrics.requestAborted();
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
  // The single app's error pages are the whole plugin's (its 404s included); with several, each app scope has its own.
  if (!several) useErrorPages(app, { pagePath: first.config.errors.pagePath });
  // A host server keeps its own 404 for paths that are not ours, unless the frontend route makes every path ours.
  if (binding || several || first.frontend) {
    const byMatch = several ? new AppMatcher(apps) : undefined;
    app.setNotFoundHandler((request, reply) => {
      const owner = byMatch ? byMatch.find(request) : first;
      if (owner && several) request.tokenHandlerApp = owner;
      const fallback = owner?.frontend?.pageFallback(request, reply);
      if (fallback) return fallback;
      return sendError(reply, owner ? new BrowserError('not_found', 'No route here.') : new BrowserError('not_found', 'No app is served at this address.'));
    });
  }
  // Called directly, not registered: it decorates every request of the app and feeds on Fastify's
  // completed-request calls (in a host server, on an onResponse hook of the plugin's routes).
  observeRequests(app, requestLines, {
    accessLog: binding?.accessLog ?? AccessLog.off(),
    includeSubject: config.logging.includeSubject,
    appOf,
  });

  const checks: ReadinessCheck[] = [{ name: 'shutdown', check: () => !shuttingDown }];
  const redis = sharedRedis ? { ...sharedRedis.connection, ping: () => first.state.ping() } : first.state.redis ? { ...first.state.redis, ping: () => first.state.ping() } : undefined;
  if (redis) {
    const details = () => ({ topology: redis.topology, reconnects: redis.events.reconnects, failovers: redis.events.failovers });
    checks.push({ name: 'session_store', check: () => redis.ping(), details });
  }
  await app.register(healthRoutes, {
    checks,
    // One app among several is ready while its provider answers (probed again while it does not); alone, once its metadata is loaded.
    apps: apps.map((one) => ({
      name: one.name,
      checks: [{ name: 'provider', check: several ? () => one.provider.reachable() : () => one.provider.ready }],
      started: () => one.provider.ready,
    })),
    several,
  });
  if (config.metrics.enabled && config.metrics.onMainListener) await app.register(metricsRoute, { metrics: processMetrics });

  for (const one of apps) {
    await app.register(
      async (scope) => {
        scope.decorate(kApp, one);
        await one.register(scope);
      },
      { prefix: one.pathPrefix },
    );
  }

  let metricsServer: Server | undefined;
  if (config.metrics.enabled && !config.metrics.onMainListener) {
    const port = config.metrics.port;
    const revoke = async (match: AdminMatch, log: FastifyBaseLogger, only: string | undefined): Promise<{ ended: number | null }> => {
      let ended: number | null = 0;
      for (const one of apps) {
        if (only !== undefined && one.name !== only) continue;
        const count = (await one.revokeMatching(match, log)).ended;
        ended = count === null || ended === null ? null : ended + count;
      }
      return { ended };
    };
    metricsServer = createMetricsServer(processMetrics, adminHandler({ token: config.admin.token, revoke, apps: apps.map((one) => one.name), logger: app.log }));
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

  // Open sockets and streams would hold the server open: they end first, with 1001 (going away).
  app.addHook('preClose', async () => {
    for (const one of apps) one.channels.endAll('shutdown');
  });
  app.addHook('onClose', async () => {
    for (const one of apps) await one.close();
    await sharedRedis?.close();
    if (metricsServer?.listening) await new Promise((resolve) => metricsServer!.close(resolve));
    // Last, so the spans of everything above are exported too.
    await tracing?.shutdown();
  });

  const discoveries = apps.map((one) => one.provider.start());
  if (options.waitForProvider) await Promise.all(discoveries);
};

declare module 'fastify' {
  interface FastifyRequest {
    /** The app a request of no route belongs to, as the 404 handler found it (several apps only). */
    tokenHandlerApp: ComposedApp | null;
  }
}

/** One app, built from its configuration: everything its routes use, and how to register them. */
export interface ComposedApp {
  readonly name: string;
  readonly host: string | undefined;
  readonly pathPrefix: string;
  readonly config: Config;
  readonly provider: OidcProvider;
  readonly state: SharedState;
  readonly metrics: Metrics;
  readonly channels: SessionChannels;
  readonly frontend: Frontend | undefined;
  readonly observed: ObservedApp;
  /** Registers the app's routes in `scope`, its own encapsulated instance (prefixed by its path prefix). */
  register(scope: FastifyInstance): Promise<void>;
  /** Ends the matching sessions everywhere and revokes their grants where the store holds them. */
  revokeMatching(match: AdminMatch, log: FastifyBaseLogger): Promise<{ ended: number | null }>;
  close(): Promise<void>;
}

interface ComposeContext {
  several: boolean;
  now: () => number;
  sharedRedis: SharedRedis | undefined;
  requestLines: RequestLines;
  /** Path prefixes of other apps on this app's host below its own prefix. */
  otherAppPrefixes: string[];
}

/** Builds one app's objects from its configuration (for the single-app form: the whole configuration). */
function composeApp(app: FastifyInstance, resolved: ResolvedApp, context: ComposeContext): ComposedApp {
  const { config, name, pathPrefix } = resolved;
  const { several, now } = context;
  // With several apps every line about one of them names it.
  const log: FastifyBaseLogger = several ? app.log.child({ app: name }) : app.log;
  const secure = config.publicUrl.startsWith('https:');
  if (!secure) {
    log.warn({ publicUrl: config.publicUrl }, 'publicUrl is plain http: session cookies lose the __Host- prefix and Secure (local development only)');
  }
  if (config.session.store === 'cookie' && !config.session.redis) {
    log.warn(
      'session.store "cookie" without session.redis: logouts are remembered by this process only — a back-channel logout or a logout is forgotten on restart and never reaches another replica. Configure session.redis (or use store: redis) for more than one replica or for logouts that survive a restart',
    );
  }
  const apiRouteConfigs = apiRoutesOf(config.routes);
  const frontendRoute = frontendRouteOf(config.routes);
  for (const route of apiRouteConfigs) {
    if (!route.tlsRejectUnauthorized) {
      log.warn({ route: route.prefix, upstream: route.upstream }, 'TLS certificate verification is OFF for this upstream (routes[].tlsRejectUnauthorized: false)');
    }
  }

  // RFC 8707: login asks for every configured resource; metrics name a resource by its route(s).
  const resources = [...new Set(config.routes.flatMap((route) => (route.token === 'user' && route.resource !== undefined ? [route.resource] : [])))];
  const routesOfResource = new Map(resources.map((resource) => [resource, config.routes.filter((route) => route.resource === resource).map((route) => route.prefix).join(',')]));
  // The app's own URLs (below its path prefix, with several apps).
  const appUrl = `${config.publicUrl}${pathPrefix}`;
  // DPoP: per-session keys (or the configured key) and the process key of client tokens.
  const dpopKeys = config.oidc.dpop ? new DpopKeys(config.oidc.dpopKeyFile === undefined ? undefined : readDpopKeyFile(config.oidc.dpopKeyFile)) : undefined;
  const dpopKeyOf = dpopKeys ? (record: { dpopKey?: string }) => dpopKeys.forSession(record) : undefined;
  if (dpopKeys) {
    log.info({ keys: dpopKeys.perSession ? 'per session (ES256)' : 'configured', alg: dpopKeys.processKey.alg }, 'DPoP on: token-endpoint calls carry DPoP proofs');
    for (const route of apiRouteConfigs) {
      if (!route.dpop && route.token !== 'none') {
        log.warn(
          { route: route.prefix, check: [`routes[].dpop`] },
          'oidc.dpop is on but this route has dpop: false: its DPoP-bound tokens go as Bearer without a proof, which an API verifying DPoP refuses (set dpop: true for such APIs)',
        );
      }
    }
  }
  const provider = new OidcProvider({
    config: config.oidc,
    redirectUri: `${appUrl}/auth/callback`,
    logger: log,
    now,
    resources,
    ...(dpopKeys ? { dpopAlgorithm: dpopKeys.processKey.alg } : {}),
  });
  // Sessions unsealed once per cookie value and remembered until the seal itself expires, by
  // Date.now (iron checks a seal against real time, not the test clock). With several apps,
  // each seals with keys of its own: no app accepts another's cookie. A cookie-store entry
  // holds a whole record (~7 KiB with its seal); a server-side store's, a session id (~0.5 KiB).
  const sealer = new Sealer(several ? appSealingSecrets(config.session.secrets, name) : config.session.secrets, {
    cacheEntries: config.session.store === 'cookie' ? 10_000 : 50_000,
  });
  const cookies = new SessionCookies({ secure, cookieName: config.session.cookieName, sameSite: config.session.sameSite });
  const timeouts = {
    idleTimeoutSeconds: config.session.idleTimeoutSeconds,
    absoluteTimeoutSeconds: config.session.absoluteTimeoutSeconds,
  };
  const state = createState({
    session: config.session,
    ...(context.sharedRedis && config.session.redis ? { shared: context.sharedRedis, keyPrefix: `${config.session.redis.keyPrefix}${name}:` } : {}),
    sealer,
    refreshResultTtlMs: config.refresh.resultTtlSeconds * 1000,
    refreshLockTtlMs: Math.max(5000, config.oidc.timeoutMs * 2),
    refreshMaxWaitMs: refreshHardTimeoutMs(config.oidc.timeoutMs) + config.oidc.timeoutMs,
    now,
    logger: log,
  });
  const persistence = persistenceFor(config.session.store, state, sealer, config.session.absoluteTimeoutSeconds);
  const metrics = new Metrics({ app: name, ...(state.countSessions ? { activeSessions: state.countSessions } : {}) });
  const sessions = new SessionManager({ cookies, persistence, timeouts, now, logger: log, metrics, signals: state.signals });
  const refreshSkewMs = config.oidc.refreshSkewSeconds * 1000;
  const refresher = new TokenRefresher({
    provider,
    resultTtlMs: config.refresh.resultTtlSeconds * 1000,
    resultMaxEntries: config.refresh.resultMaxEntries,
    refreshSkewMs,
    waitMs: config.oidc.timeoutMs,
    now,
    logger: log,
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
  const channels = new SessionChannels({ signals: state.signals, sessions, timeouts, now, logger: log });
  if (apiRouteConfigs.some((route) => route.websocket)) channels.start();
  const cors = new Cors(config.csrf, config.csrf.header);

  const publicProto = secure ? 'https' : 'http';
  const publicHost = new URL(config.publicUrl).host;
  const frontend = frontendRoute
    ? createFrontend({
        route: frontendRoute,
        apiPrefixes: apiRouteConfigs.map((route) => route.prefix),
        policy: { cookies, stripCookies: frontendRoute.stripCookies, csrfHeader: config.csrf.header },
        publicProto,
        publicHost,
        pathPrefix,
        otherAppPrefixes: context.otherAppPrefixes,
      })
    : undefined;
  const observed = observedApp({ metrics, name: several ? name : undefined, pathPrefix, routePrefixes: apiRouteConfigs.map((r) => r.prefix) });

  const register = async (scope: FastifyInstance) => {
    if (several) {
      // Every route of the app answers its Host alone (any port): a constraint the router checks, no hook per request.
      scope.addHook('onRoute', (route) => {
        route.constraints = { ...route.constraints, [APP_HOST_CONSTRAINT]: resolved.host! };
      });
      // Each request's log lines name the app (the logger is still made only when a line is written).
      scope.setChildLoggerFactory((logger, bindings, loggerOptions) => logger.child({ ...bindings, app: name }, loggerOptions));
      useErrorPages(scope, { pagePath: config.errors.pagePath, basePath: pathPrefix });
    }
    // Cookies are parsed where they are read (SessionCookies.received), not by a hook on every request.
    await scope.register(fastifyCookie, { hook: false });
    if (config.rateLimit.enabled) {
      await scope.register(fastifyRateLimit, {
        global: false,
        // Counted in Redis when replicas share one; a Redis outage never blocks logins.
        ...(state.rateLimit ? { ...state.rateLimit, skipOnError: true } : {}),
        errorResponseBuilder: (_request, limit) =>
          Object.assign(new BrowserError('too_many_requests', `Too many sign-in attempts from this address: try again in ${limit.after}.`), {
            statusCode: 429,
          }),
      });
    }
    await scope.register(authRoutes, {
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
      pathPrefix,
      retryAfterSeconds: RETRY_AFTER_SECONDS,
      now,
      metrics,
      allowedAcrValues: new Set([...config.oidc.allowedAcrValues, ...config.routes.flatMap((route) => route.require?.acr ?? [])]),
      dpopKeys,
    });
    await scope.register(sessionsRoutes, { sessions, store: state.sessionStore, revoker, timeouts, now, csrfCheck, originCheck });
    await scope.register(eventsRoute, { sessions, channels, originCheck, maxStreamsPerSession: config.session.maxEventStreams });
    // GET /auth/client.js: the browser helper SPAs import.
    await scope.register(clientModuleRoute);
    await scope.register(backchannelLogoutRoute, {
      provider,
      sessions,
      seenOnce: state.seenOnce,
      retryAfterSeconds: RETRY_AFTER_SECONDS,
    });
    await scope.register(apiRoutes, {
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
      browserLeft: (request, reply) => context.requestLines.browserLeft(request, reply),
      publicUrl: config.publicUrl,
      pathPrefix,
      now,
      channels,
      upgradeOriginCheck: createUpgradeOriginCheck(config.csrf, config.publicUrl),
      maxSocketsPerSession: config.session.maxWebSockets,
      metrics,
    });
    // The catch-all, below every route above.
    await frontend?.register(scope);
  };

  // Ends the matching sessions everywhere and revokes their grants where the store holds them.
  const revokeMatching = async (match: AdminMatch, adminLog: FastifyBaseLogger): Promise<{ ended: number | null }> => {
    const store = state.sessionStore;
    if (!store) {
      await sessions.endProviderSessions(match, adminLog, 'elsewhere');
      return { ended: null };
    }
    let ended = 0;
    for (const id of 'sid' in match ? await store.findBySid(match.sid) : await store.findBySub(match.sub)) {
      const record = await store.get(id);
      if (!record) continue;
      const last = await sessions.endSession(record, 'elsewhere', adminLog);
      await revoker.revoke([record, last], adminLog, 'ended by an operator');
      ended++;
    }
    return { ended };
  };

  return {
    name,
    host: resolved.host,
    pathPrefix,
    config,
    provider,
    state,
    metrics,
    channels,
    frontend,
    observed,
    register,
    revokeMatching,
    close: async () => {
      channels.close();
      provider.stop();
      await state.close();
    },
  };
}
/**
 * A request body that broke off because the browser left (its socket closed mid-body),
 * as opposed to one that was refused or failed to parse.
 */
function browserAborted(error: unknown, raw: IncomingMessage): boolean {
  const code = (error as { code?: unknown }).code;
  return raw.aborted || ((code === 'ECONNRESET' || code === 'ERR_STREAM_PREMATURE_CLOSE' || code === 'FST_ERR_CTP_INVALID_CONTENT_LENGTH') && raw.destroyed);
}
