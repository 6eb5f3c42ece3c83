import { readFileSync } from 'node:fs';
import type { Readable } from 'node:stream';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import httpProxy from '@fastify/http-proxy';
import type { Span } from '@opentelemetry/api';
import type { ApiRouteConfig } from '../config/types.js';
import { BrowserError, loginRequired, upstreamUnavailable } from '../errors.js';
import type { SessionCookies } from '../session/cookies.js';
import type { SessionManager } from '../session/manager.js';
import type { ExchangeTokens } from '../tokens/exchange-tokens.js';
import type { ClientTokens } from '../tokens/client-tokens.js';
import type { SessionTokens } from '../tokens/session-tokens.js';
import { browserResponseHeaders, upstreamRequestHeaders } from './headers.js';
import { andThen, settle } from '../awaitable.js';
import { Cors } from './cors.js';
import { bodyExceeded, bodyTooLarge, isReplayable, readBody, upstreamBodyOf } from './request-body.js';
import { dropUpstreamHeaders, fitsBuffer, passWhole } from './response-body.js';
import { callUpstream, isTimeout, queryOf, upstreamPath, upstreamPool, type UpstreamError, type UpstreamResponse } from './upstream-exchange.js';
import { tokenSourceFor, type Credential } from './token-source.js';
import { UpstreamTracing } from './upstream-tracing.js';
import { identityHeaderNames, RoutePolicy, type IdentityHeaders } from './route-policy.js';
import type { RequestCheck } from './csrf.js';
import { isUpgrade, webSocketRoute } from './websockets.js';
import type { SessionChannels } from '../session/channels.js';
import type { LoadedSession } from '../session/manager.js';
import type { Metrics } from '../ops/metrics.js';
import type { DpopKeys } from '../oidc/dpop.js';

export interface ApiRoutesOptions {
  routes: ApiRouteConfig[];
  cookies: SessionCookies;
  sessions: SessionManager;
  sessionTokens: SessionTokens;
  clientTokens: ClientTokens;
  exchangeTokens: ExchangeTokens;
  csrfCheck: (request: FastifyRequest) => void;
  csrfHeader: string;
  cors: Cors;
  /** `https` or `http`: what the browser used, sent as X-Forwarded-Proto. */
  publicProto: string;
  /** publicUrl's host, sent as X-Forwarded-Host (never the browser's Host header). */
  publicHost: string;
  replayBodyLimitBytes: number;
  /** Largest body streamed to an upstream (413 beyond). */
  bodyLimitBytes: number;
  retryAfterSeconds: number;
  /** Accounts for a response that was ready but could not be sent: the browser had gone. */
  browserLeft: (request: FastifyRequest, reply: FastifyReply) => void;
  /** The origin login URLs of step_up_required answers belong to. */
  publicUrl: string;
  /** The app's path prefix when apps share a host ('' otherwise): step_up_required's login URL is below it. */
  pathPrefix?: string;
  now: () => number;
  /** The long-lived channels of sessions (WebSockets, streamed responses), ended with their session. */
  channels?: SessionChannels | undefined;
  /** The Origin check of WebSocket upgrades (websocket: true routes). */
  upgradeOriginCheck?: RequestCheck | undefined;
  /** WebSockets one session may hold open on this replica. */
  maxSocketsPerSession?: number | undefined;
  metrics?: Metrics | undefined;
  /** oidc.dpop: which key each token is bound to (dpop: true routes sign their proofs with it). */
  dpopKeys?: DpopKeys | undefined;
}

/** What one proxied request carries between its steps: per request, never shared. */
interface ProxyState {
  credential?: Credential;
  /** Set once the request has been replayed after a 401, so it never loops. */
  retried: boolean;
  /** Set once the request has been replayed after an upstream's DPoP nonce challenge. */
  nonceReplayed: boolean;
  /** The upstream path called (the route's destination, normalized), without the query. */
  dest: string;
  /** What is sent upstream as the body: kept (and sent again on a replay), streamed, or none. */
  body: Buffer | Readable | null;
  /** The span of the upstream call in flight (tracing on only). */
  upstreamSpan?: Span | undefined;
}

declare module 'fastify' {
  interface FastifyRequest {
    proxyState: ProxyState | null;
  }
}

/** Serves every configured API route: @fastify/http-proxy routes it (and its WebSockets), undici calls the upstream. */
export async function apiRoutes(app: FastifyInstance, options: ApiRoutesOptions): Promise<void> {
  app.decorateRequest('proxyState', null);
  // Identity header names are dropped from what browsers send on every route, not only where they are set.
  const identityNames = identityHeaderNames(options.routes);
  // The latest DPoP nonce of each upstream origin (RFC 9449 §9), shared by the routes to it.
  const dpopNonces = new Map<string, string>();
  for (const route of options.routes) {
    await app.register(async (scope) => proxyRoute(scope, route, options, identityNames, dpopNonces));
  }
}

/** An upstream's 401 asking for a DPoP nonce (RFC 9449 §9): `WWW-Authenticate: DPoP error="use_dpop_nonce"`. */
export function isDpopNonceChallenge(wwwAuthenticate: string | string[] | undefined): boolean {
  const values = Array.isArray(wwwAuthenticate) ? wwwAuthenticate : wwwAuthenticate === undefined ? [] : [wwwAuthenticate];
  return values.some((value) => /(^|,)\s*dpop\b/i.test(value) && /\berror\s*=\s*"?use_dpop_nonce"?/i.test(value));
}

async function proxyRoute(
  scope: FastifyInstance,
  route: ApiRouteConfig,
  options: ApiRoutesOptions,
  identityNames: ReadonlySet<string> | undefined,
  dpopNonces: Map<string, string>,
): Promise<void> {
  const { cookies, csrfCheck, cors } = options;
  const source = tokenSourceFor(route, options);
  const dpop = route.dpop;
  // Both undefined for a route without require / when no route has identity headers: nothing per request then.
  const routePolicy = RoutePolicy.forRoute(route, options.publicUrl, options.now, `${options.pathPrefix ?? ''}/auth/login`);
  const identitySet = Object.entries(route.identityHeaders ?? {}).map(([name, claim]) => [name.toLowerCase(), claim] as const);
  const identity: IdentityHeaders | undefined = identityNames ? { dropped: identityNames, set: identitySet } : undefined;
  const policy = { cookies, stripCookies: route.stripCookies, csrfHeader: options.csrfHeader };
  const retryOn401 = route.retryOn401 && route.token !== 'none';
  // A DPoP route replays after an upstream's nonce challenge, whatever retryOn401 says.
  const bodyPolicy = { limitBytes: options.bodyLimitBytes, replayLimitBytes: retryOn401 || dpop ? options.replayBodyLimitBytes : -1 };
  const forwarded = { proto: options.publicProto, host: options.publicHost };
  // An upstream base path (http://h/base) is part of what the prefix is rewritten to:
  // every destination is called at the upstream's origin.
  const upstreamUrl = new URL(route.upstream);
  const rewritePrefix = upstreamUrl.pathname.replace(/\/+$/, '') + route.rewritePrefix;
  const upstreamTracing = UpstreamTracing.forRoute(upstreamUrl, route.prefix);
  const tlsCa = route.tlsCaFile ? readFileSync(route.tlsCaFile) : undefined;
  const pool = upstreamPool(upstreamUrl.origin, {
    connections: route.connections,
    keepAliveTimeoutMs: route.keepAliveTimeoutMs,
    connectTimeoutMs: route.connectTimeoutMs,
    rejectUnauthorized: route.tlsRejectUnauthorized,
    ca: tlsCa,
  });
  // Destroyed rather than closed: a stream still open (server-sent events) would hold a close forever.
  scope.addHook('onClose', async () => pool.destroy());
  /** What goes upstream from a browser's request headers: our cookies, CSRF header and its Authorization out; the route's token in. */
  const headersFor = (request: Pick<FastifyRequest, 'ip' | 'id' | 'method' | 'proxyState' | 'session'>, headers: FastifyRequest['headers']) => {
    const upstreamHeaders = upstreamRequestHeaders(
      headers,
      policy,
      { ip: request.ip, proto: forwarded.proto, host: forwarded.host },
      request.proxyState?.credential?.authorization,
      identity,
      identitySet.length === 0 ? undefined : request.session?.claims,
    );
    upstreamHeaders['x-request-id'] = String(request.id);
    const credential = request.proxyState?.credential;
    if (credential?.proof && request.proxyState) {
      upstreamHeaders.dpop = credential.proof(request.method, `${upstreamUrl.origin}${request.proxyState.dest}`, dpopNonces.get(upstreamUrl.origin));
    }
    return upstreamHeaders;
  };
  const channels = options.channels;
  const webSockets =
    route.websocket && channels && options.upgradeOriginCheck
      ? webSocketRoute({
          route,
          source,
          routePolicy,
          channels,
          cookies,
          upgradeOriginCheck: options.upgradeOriginCheck,
          maxSocketsPerSession: options.maxSocketsPerSession ?? 20,
          metrics: options.metrics,
          upstreamHeaders: (request) => headersFor(request, request.headers),
          tls: { rejectUnauthorized: route.tlsRejectUnauthorized, ...(tlsCa ? { ca: tlsCa } : {}) },
          now: options.now,
        })
      : undefined;
  if (webSockets) {
    // An upgrade is checked before the proxy answers it (a plain request passes at once).
    scope.addHook('preHandler', (request, reply, done) => {
      if (!isUpgrade(request)) {
        done();
        return;
      }
      webSockets.checkUpgrade(request, reply).then(() => done(), done);
    });
  }

  /**
   * A streamed response (server-sent events, a chunked stream) of a session ends when the
   * session does: registered with the session's channels, destroyed on its end.
   */
  const endWithSession = (request: FastifyRequest, reply: FastifyReply, body: Readable): void => {
    const record = request.session;
    if (!channels || !record) return;
    const loaded = (request.proxyState?.credential as { session?: LoadedSession } | undefined)?.session;
    const cookieValue = loaded?.cookieValue ?? cookies.readSession(request) ?? '';
    const unregister = channels.add(record, cookieValue, {
      kind: 'stream',
      end: (why) => {
        options.metrics?.streamEnded(why);
        reply.log.info({ route: route.prefix, reason: why }, 'stream ended with its session');
        body.destroy();
        reply.raw.destroy();
      },
    });
    reply.raw.once('close', unregister);
  };

  /**
   * Runs before a request body is read (from the body parser, so a request without a body
   * pays nothing for it): a call without the CSRF header, without the session the route
   * needs, or whose session the route's policy refuses, is refused without a byte of its
   * body being read or buffered.
   */
  const checkBeforeBody = (request: FastifyRequest, proceed: (err: Error | null) => void): void => {
    settle(
      () => {
        csrfCheck(request);
        if (!source.needsSession) return undefined;
        return andThen(options.sessions.peek(request), (record) => {
          if (!record) throw loginRequired();
          // A route policy refuses before the body too (checked again once the session is loaded).
          routePolicy?.check(record, request.headers);
        });
      },
      (err) => proceed(err),
    );
  };

  // Bodies stream through; only those small enough to replay are kept.
  scope.removeAllContentTypeParsers();
  scope.addContentTypeParser('*', (request, payload, done) => {
    checkBeforeBody(request, (err) => {
      if (err) done(err, undefined);
      else readBody(request, payload, bodyPolicy, done);
    });
  });

  /**
   * Checks the call and finds its token, then forwards it. Run from the route's handler
   * rather than as a preHandler hook, which saves a hook runner per request; the handler
   * runs after @fastify/http-proxy has checked the destination, so a path escaping the
   * route is refused with 400 before the CSRF check and the session (no upstream is called
   * either way) — except for a request with a body, whose CSRF header and session the body
   * parser checked first (checkBeforeBody; the CSRF check runs again here, a header
   * compare). Callback style, settled synchronously when the session answers from memory:
   * the usual proxied request then costs no promise and no microtask hop here.
   */
  const authorizeAndForward = (request: FastifyRequest, reply: FastifyReply, dest: string): void => {
    reply.header('x-request-id', request.id);
    request.apiRoute = route.prefix;
    if (cors.active) {
      if (Cors.isPreflight(request)) {
        cors.preflight(request, reply);
        return;
      }
      cors.grant(request, reply);
    }
    let path: string;
    try {
      // The route's root with a query (`/api?x=1`) comes as ''; the root is '/'.
      path = upstreamPath(dest === '' ? '/' : dest);
    } catch (err) {
      reply.send(err);
      return;
    }
    const state: ProxyState = { retried: false, nonceReplayed: false, dest: path, body: upstreamBodyOf(request) };
    request.proxyState = state;
    if (upstreamTracing) upstreamTracing.endWithResponse(reply.raw, state);
    settle(
      () => {
        csrfCheck(request);
        return andThen(source.authorize(request, reply), (credential) => {
          if (credential) state.credential = credential;
          // The session is known now, and the upstream not called yet.
          if (routePolicy) {
            if (!request.session) throw loginRequired();
            routePolicy.check(request.session, request.headers);
          }
        });
      },
      (err) => {
        if (err) {
          reply.send(err);
          return;
        }
        forward(request, reply, state);
      },
    );
  };

  /** Calls the upstream with the request as it stands (its credential, its body). */
  const forward = (request: FastifyRequest, reply: FastifyReply, state: ProxyState): void => {
    const headers = headersFor(request, request.headers);
    headers.host = upstreamUrl.host;
    // A kept body is sent from memory: its length is known, whatever the browser announced.
    if (Buffer.isBuffer(state.body)) headers['content-length'] = String(state.body.length);
    if (upstreamTracing) upstreamTracing.start(request, state, headers, state.dest);
    callUpstream(
      pool,
      { method: request.method, path: state.dest + queryOf(request.url), headers, body: state.body, timeoutMs: route.responseTimeoutMs },
      {
        response: (res) => answered(request, reply, res),
        failed: (error) => {
          if (upstreamTracing) upstreamTracing.failed(state, error);
          upstreamFailed(reply, error);
        },
      },
    );
  };

  /** The upstream could not be reached, timed out, or its response failed before anything was passed on. */
  const upstreamFailed = (reply: FastifyReply, error: UpstreamError): void => {
    // Nobody to answer: the browser has gone, and its leaving is the story, not the upstream.
    if (reply.raw.destroyed) {
      options.browserLeft(reply.request, reply);
      return;
    }
    reply.log.warn({ err: { message: error.message, code: error.code } }, 'upstream request failed');
    if (bodyExceeded(reply.request)) {
      reply.send(bodyTooLarge(options.bodyLimitBytes));
      return;
    }
    reply.send(isTimeout(error) ? new BrowserError('upstream_timeout', 'The API behind this route did not answer in time.') : upstreamUnavailable());
  };
  const wholeBodyEvents = { browserLeft: options.browserLeft, failed: upstreamFailed };

  /** The request again, to the same destination; token_rejected (`why`) when its body was too large to keep for a replay. */
  const replay = (request: FastifyRequest, reply: FastifyReply, state: ProxyState, why: string): void => {
    if (!isReplayable(request)) throw new BrowserError('token_rejected', `${why}, but this request body was too large to replay: send the request again.`);
    forward(request, reply, state);
  };

  /** After an upstream 401: the request again with the renewed credential. */
  const replayWith = async (request: FastifyRequest, reply: FastifyReply, state: ProxyState, renewal: Promise<Credential>): Promise<void> => {
    state.retried = true;
    state.credential = await renewal;
    replay(request, reply, state, 'The API rejected the access token. A new one has been obtained');
  };

  /** After an upstream's DPoP nonce challenge: the request again, its new proof carrying the nonce (no refresh). */
  const replayWithNonce = (request: FastifyRequest, reply: FastifyReply, state: ProxyState): void => {
    state.nonceReplayed = true;
    options.metrics?.dpopNonceChallenge(route.prefix, isReplayable(request) ? 'replayed' : 'passed_on');
    replay(request, reply, state, 'The API asked for a new DPoP proof with its nonce');
  };

  /**
   * The upstream answered: a DPoP nonce challenge or a rejected token is replayed (its
   * answer dropped), anything else is passed on, small bodies whole, the rest streamed.
   */
  const answered = (request: FastifyRequest, reply: FastifyReply, res: UpstreamResponse): void => {
    const state = request.proxyState;
    if (upstreamTracing) upstreamTracing.answered(state, res.statusCode);
    // The browser left while the upstream worked: nothing to pass on.
    if (reply.raw.destroyed) {
      res.body.abort();
      options.browserLeft(request, reply);
      return;
    }
    let nonceChallenge = false;
    if (dpop && state) {
      // RFC 9449 §9: the upstream's nonce, on any answer, goes into the next proofs to it.
      const nonce = res.headers['dpop-nonce'];
      const fresh = typeof nonce === 'string' && nonce !== '';
      if (fresh) dpopNonces.set(upstreamUrl.origin, nonce);
      // A nonce challenge is answered with a new proof, never a new token: replayed once
      // (a second one is passed on as the 401 it is).
      nonceChallenge = res.statusCode === 401 && isDpopNonceChallenge(res.headers['www-authenticate']);
      if (nonceChallenge && (!fresh || state.nonceReplayed)) options.metrics?.dpopNonceChallenge(route.prefix, 'passed_on');
      if (nonceChallenge && fresh && !state.nonceReplayed) {
        res.body.discard();
        reply.log.debug({ route: route.prefix }, 'upstream asked for a DPoP nonce: replaying once with it');
        try {
          replayWithNonce(request, reply, state);
        } catch (err) {
          reply.send(err);
        }
        return;
      }
    }
    const renewal = res.statusCode === 401 && !nonceChallenge && retryOn401 && state?.credential && !state.retried ? source.renew(request, reply, state.credential) : null;
    if (renewal) {
      res.body.discard();
      replayWith(request, reply, state!, renewal).catch((err: unknown) => reply.send(err));
      return;
    }
    passOn(request, reply, res);
  };

  /** The upstream's answer goes to the browser: its status, the headers a browser may see, its body. */
  const passOn = (request: FastifyRequest, reply: FastifyReply, res: UpstreamResponse): void => {
    try {
      reply.code(res.statusCode);
    } catch {
      // A status Fastify cannot send (outside 100-599).
      res.body.abort();
      reply.send(new BrowserError('upstream_unavailable', `The API answered with status ${res.statusCode}, which cannot be passed on.`));
      return;
    }
    const headers = browserResponseHeaders(res.headers, cookies);
    for (const name in headers) reply.header(name, headers[name]);
    // An HTTP/1 connection cannot take the next request before this one's body is read:
    // the upstream answered before the browser had sent it all.
    if (!request.raw.complete) reply.header('connection', 'close');
    // Shared caches must never keep a response that sets our session cookie.
    if (cookies.setsSessionCookie(reply)) reply.header('cache-control', 'private, no-store');
    if (cors.active) cors.grant(request, reply);
    if (fitsBuffer(request, res, route.bufferResponseBytes)) {
      passWhole(request, reply, res, wholeBodyEvents);
      return;
    }
    // A body that breaks off mid-stream is logged by RequestLines.streamError.
    const body = res.body.stream();
    endWithSession(request, reply, body);
    reply.send(body);
  };

  await scope.register(httpProxy, {
    upstream: upstreamUrl.origin,
    prefix: route.prefix,
    rewritePrefix,
    proxyPayloads: false,
    config: { apiRoute: route.prefix },
    disableRequestLogging: true,
    // reply-from's own agent would stay unused: the routes' calls go through forward().
    undici: pool,
    // Nothing returned: a returned reply (a thenable) would have Fastify watch every
    // response's end (an end-of-stream listener set) for nothing.
    handler: (request, reply, dest) => authorizeAndForward(request, reply, dest),
    ...(webSockets ? webSockets.proxyOptions : {}),
  });
}
