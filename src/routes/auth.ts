import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { badRequest, BrowserError, csrfFailed, loginRequired } from '../errors.js';
import { answerProviderFailure } from '../failures.js';
import { ProviderError } from '../oidc/errors.js';
import type { OidcProvider } from '../oidc/provider.js';
import type { SessionManager } from '../session/manager.js';
import type { PendingLogins } from '../session/pending-login.js';
import { viewOf, type ApiTokenRoute, type SessionTimeouts } from '../session/record.js';
import type { SessionTokens } from '../tokens/session-tokens.js';
import type { TokenRefresher } from '../tokens/refresher.js';
import type { TokenRevoker } from '../tokens/revoker.js';
import { safeReturnTo } from './return-to.js';
import { loginParamsOf, SILENT_LOGIN_REFUSALS, withError } from './login-params.js';
import type { RequestCheck } from '../proxy/csrf.js';
import { Cors } from '../proxy/cors.js';
import { BoundedTtlCache } from '../state/bounded-cache.js';
import type { Metrics } from '../ops/metrics.js';
import type { RateLimitConfig } from '../config/types.js';
import { sessionHash, type SessionRecord } from '../state/record.js';
import type { DpopKeys } from '../oidc/dpop.js';

export interface AuthRoutesOptions {
  metrics: Metrics;
  rateLimit: RateLimitConfig;
  provider: OidcProvider;
  sessions: SessionManager;
  sessionTokens: SessionTokens;
  refresher: TokenRefresher;
  revoker: TokenRevoker;
  /** How long a logout waits for a refresh of the session still running here (`oidc.timeoutMs`). */
  waitMs: number;
  pendingLogins: PendingLogins;
  timeouts: SessionTimeouts;
  /** ID-token claims `/auth/user` leaves out (`session.omitClaims`). */
  omitClaims: readonly string[];
  /** Routes with per-API tokens, whose expiry times `/auth/user` shows. */
  apiTokenRoutes?: readonly ApiTokenRoute[];
  csrfCheck: RequestCheck;
  /** For reading endpoints: only our own (or an allowed) origin may ask. */
  originCheck: RequestCheck;
  /** Keep the browser's User-Agent with the session (server-side stores: GET /auth/sessions shows it). */
  keepUserAgent: boolean;
  cors: Cors;
  /** `POST /auth/refresh` at most once per this many ms per session (0: no limit). */
  forcedRefreshIntervalMs: number;
  /** Origin the browser sees; the callback URL is rebuilt from it, never from the Host header. */
  publicUrl: string;
  /** '' or the app's path prefix (apps[].match.pathPrefix): its start page is pathPrefix + '/'. */
  pathPrefix?: string;
  retryAfterSeconds: number;
  now: () => number;
  /** acr values `/auth/login?acr_values=` may ask for: oidc.allowedAcrValues and every route's require.acr. */
  allowedAcrValues: ReadonlySet<string>;
  /** oidc.dpop: the keys the code exchange binds the session's tokens to. */
  dpopKeys?: DpopKeys | undefined;
}

/**
 * Largest body an `/auth` endpoint reads: they take none, or a logout form's few fields.
 * Anything larger is refused (413) rather than parsed.
 */
export const AUTH_BODY_LIMIT_BYTES = 4096;

/** The `/auth/*` endpoints of docs/contracts.md "HTTP surface". */
export async function authRoutes(app: FastifyInstance, options: AuthRoutesOptions): Promise<void> {
  const { provider, sessions, sessionTokens, pendingLogins, timeouts, csrfCheck, now, metrics, cors } = options;
  const omitClaims = new Set(options.omitClaims);

  app.addHook('onSend', async (request, reply) => {
    reply.header('cache-control', 'no-store');
    reply.header('x-content-type-options', 'nosniff');
    reply.header('x-request-id', request.id);
    cors.grant(request, reply);
  });

  // A page on an allowed origin asks before it calls /auth/user, /auth/refresh or /auth/logout.
  app.options('/auth/*', async (request, reply) => {
    if (!Cors.isPreflight(request)) throw new BrowserError('not_found', 'No route here.');
    cors.preflight(request, reply);
    return reply;
  });

  /** Forced refreshes by session id → when the last one was allowed. */
  const forcedRefreshes = new BoundedTtlCache<number>(100_000, Math.max(1, options.forcedRefreshIntervalMs), now);
  const limitForcedRefresh = (record: SessionRecord): void => {
    if (options.forcedRefreshIntervalMs <= 0) return;
    const last = forcedRefreshes.get(record.id);
    if (last !== undefined) {
      const retryAfterSeconds = Math.max(1, Math.ceil((last + options.forcedRefreshIntervalMs - now()) / 1000));
      throw new BrowserError('too_many_requests', `This session was refreshed moments ago: try again in ${retryAfterSeconds} s.`, retryAfterSeconds);
    }
    forcedRefreshes.set(record.id, now());
  };

  /** Checks a state-changing call before its body is read (a route's onRequest hook). */
  const csrfBeforeBody = async (request: FastifyRequest): Promise<void> => {
    if (isFormPost(request)) {
      // A plain HTML <form method="post" action="/auth/logout"> cannot send the CSRF header:
      // such a post must carry an Origin (browsers send it on form posts) that is ours.
      if (request.headers.origin === undefined) throw csrfFailed('A logout form post must carry an Origin header.');
      options.originCheck(request);
    } else {
      csrfCheck(request);
    }
  };

  const perMinute = (max: number) => (options.rateLimit.enabled ? { config: { rateLimit: { max, timeWindow: 60_000 } } } : {});

  app.get('/auth/login', perMinute(options.rateLimit.loginPerMinute), async (request, reply) => {
    const returnTo = safeReturnTo(singleQueryValue(request, 'returnTo'), `${options.pathPrefix ?? ''}/`);
    const params = loginParamsOf(request.query, options.allowedAcrValues);
    let login;
    try {
      login = await provider.startLogin(params);
    } catch (err) {
      if (err instanceof ProviderError) throw answerProviderFailure(err, 'login', request.log, options.retryAfterSeconds);
      throw err;
    }
    await pendingLogins.begin(request, reply, login.transaction, returnTo);
    return reply.redirect(login.url, 302);
  });

  app.get('/auth/callback', perMinute(options.rateLimit.callbackPerMinute), async (request, reply) => {
    try {
      return await callback(request, reply);
    } catch (err) {
      metrics.login('failure');
      throw err;
    }
  });

  const callback = async (request: FastifyRequest, reply: FastifyReply) => {
    const state = singleQueryValue(request, 'state');
    if (state === undefined) throw badRequest('The sign-in response carries no single state parameter.');
    const pending = await pendingLogins.take(request, reply, state);
    if (!pending) {
      throw badRequest('This sign-in response does not belong to a sign-in started here, or it has expired or was already used: start again.');
    }
    // A silent login the provider could not complete without the user: back to the page, which decides.
    const refusal = singleQueryValue(request, 'error');
    if (pending.silent && refusal !== undefined && SILENT_LOGIN_REFUSALS.has(refusal)) {
      request.log.info({ error: refusal }, 'silent login refused by the provider');
      return reply.redirect(withError(pending.returnTo, refusal), 302);
    }
    // DPoP: the session's own key is made now, before the code exchange, so that the very
    // first tokens are bound to it (or the configured key binds them).
    const dpopKey = options.dpopKeys?.newSessionKey();
    const bindingKey = options.dpopKeys ? (dpopKey === undefined ? options.dpopKeys.processKey : options.dpopKeys.forSession({ dpopKey })) : undefined;
    let tokens;
    try {
      tokens = await provider.finishLogin(new URL(request.url, options.publicUrl), pending, bindingKey);
    } catch (err) {
      if (err instanceof ProviderError) throw answerProviderFailure(err, 'sign-in', request.log, options.retryAfterSeconds);
      throw err;
    }
    if (!tokens.claims || typeof tokens.claims.sub !== 'string') {
      throw badRequest('Sign-in failed: the provider sent no ID token.');
    }
    const at = now();
    const previous = await sessions.load(request, reply);
    // The same user signing in again (a step-up): the session keeps its identity and gets
    // the new login's claims (acr, auth_time) and tokens.
    if (previous && previous.record.claims.sub === tokens.claims.sub) {
      const { refreshToken: _r, idToken: _i, scope: _s, dpopKey: previousKey, resourceTokens, exchangedTokens, ...kept } = previous.record;
      // Per-API tokens stay only while bound to the same key (a new session key binds the
      // new tokens; the old key's tokens are obtained again when next needed).
      const sameKey = previousKey === dpopKey;
      const updated: SessionRecord = {
        ...kept,
        ...(sameKey && resourceTokens ? { resourceTokens } : {}),
        ...(sameKey && exchangedTokens ? { exchangedTokens } : {}),
        ...(dpopKey !== undefined ? { dpopKey } : {}),
        accessToken: tokens.accessToken,
        tokenType: tokens.tokenType,
        accessTokenExpiresAt: tokens.accessTokenExpiresAt,
        claims: tokens.claims,
        lastSeenAt: at,
        // A newer token version: stores keep it over writes of the record it replaces.
        refreshedAt: at,
        ...(tokens.refreshToken ? { refreshToken: tokens.refreshToken } : {}),
        ...(tokens.idToken ? { idToken: tokens.idToken } : {}),
        ...(tokens.scope ? { scope: tokens.scope } : {}),
      };
      const saved = await sessions.save(request, reply, updated, previous);
      sessions.signal({ kind: 'refreshed', match: { sessionHash: sessionHash(saved) }, accessTokenExpiresAt: saved.accessTokenExpiresAt, lastSeenAt: saved.lastSeenAt }, request.log);
      metrics.login('success');
      request.log.info({ session: sessionHash(saved) }, 'session signed in again');
      return reply.redirect(pending.returnTo, 302);
    }
    const record: SessionRecord = {
      id: sessions.newSessionId(),
      accessToken: tokens.accessToken,
      tokenType: tokens.tokenType,
      accessTokenExpiresAt: tokens.accessTokenExpiresAt,
      claims: tokens.claims,
      createdAt: at,
      lastSeenAt: at,
      ...(tokens.refreshToken ? { refreshToken: tokens.refreshToken } : {}),
      ...(tokens.idToken ? { idToken: tokens.idToken } : {}),
      ...(tokens.scope ? { scope: tokens.scope } : {}),
      ...(dpopKey !== undefined ? { dpopKey } : {}),
      ...(options.keepUserAgent ? userAgentOf(request) : {}),
    };
    // A login as another user replaces whatever session this browser had.
    if (previous) await sessions.end(request, reply, previous.record, 'user');
    await sessions.save(request, reply, record);
    metrics.login('success');
    request.log.info({ session: sessionHash(record) }, 'session started');
    return reply.redirect(pending.returnTo, 302);
  };

  app.get('/auth/user', async (request, reply) => {
    options.originCheck(request);
    const loaded = await sessions.load(request, reply);
    if (!loaded) throw loginRequired();
    const record = await sessions.touch(request, reply, loaded);
    return viewOf(record, timeouts, omitClaims, options.apiTokenRoutes);
  });

  app.post('/auth/refresh', { bodyLimit: AUTH_BODY_LIMIT_BYTES, onRequest: async (request) => csrfCheck(request) }, async (request, reply) => {
    const loaded = await sessions.load(request, reply);
    if (!loaded) throw loginRequired();
    limitForcedRefresh(loaded.record);
    const refreshed = await sessionTokens.refresh(request, reply, loaded, 'forced');
    return viewOf(refreshed.record, timeouts, omitClaims, options.apiTokenRoutes);
  });

  // The fields of a logout form are not needed; the form's Origin was checked before.
  app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string', bodyLimit: 1024 }, (_request, _body, done) => {
    done(null, FORM_POST);
  });

  app.post('/auth/logout', { bodyLimit: AUTH_BODY_LIMIT_BYTES, onRequest: csrfBeforeBody }, async (request, reply) => {
    const formPost = isFormPost(request);
    const logoutUrl = await logout(request, reply);
    // The form post navigated here: send the browser on (303: the next request is a GET).
    return formPost ? reply.redirect(logoutUrl ?? `${options.pathPrefix ?? ''}/`, 303) : { logoutUrl };
  });

  /**
   * Ends the session everywhere first — from then on no write can bring it back — then
   * revokes its grant: the tokens this request loaded, the ones the store held last, and
   * those a refresh racing the logout obtained. The provider's logout URL, if any.
   */
  const logout = async (request: FastifyRequest, reply: FastifyReply): Promise<string | null> => {
    const loaded = await sessions.load(request, reply);
    if (!loaded) {
      sessions.cookies.clearSession(request, reply);
      return null;
    }
    const last = await sessions.end(request, reply, loaded.record, 'user');
    const raced = await options.refresher.successors(last ?? loaded.record, options.waitMs);
    await options.revoker.revoke([loaded.record, last, ...raced], request.log, 'logout');
    // Per-API tokens (resource and exchanged tokens) are access tokens of their own: revoked
    // one by one where the provider can (a provider that ended the grant above may already
    // have invalidated them; self-contained JWTs live until they expire at most).
    await options.revoker.revoke(apiTokensOf([loaded.record, last, ...raced]), request.log, 'logout: per-API token');
    return provider.endSessionUrl((last ?? loaded.record).idToken);
  };
}

/** Every per-API access token these records and refresh results hold. */
function apiTokensOf(sets: ReadonlyArray<{ resourceTokens?: Record<string, { accessToken: string }>; exchangedTokens?: Record<string, { accessToken: string }>; resources?: Record<string, { accessToken: string }> } | null | undefined>): Array<{ accessToken: string }> {
  const tokens: Array<{ accessToken: string }> = [];
  for (const set of sets) {
    if (!set) continue;
    for (const group of [set.resourceTokens, set.exchangedTokens, set.resources]) {
      for (const token of Object.values(group ?? {})) tokens.push({ accessToken: token.accessToken });
    }
  }
  return tokens;
}

/** Marks a parsed HTML form post (its fields are not needed). */
const FORM_POST = Symbol('form post');

/** An HTML form's post, by its declared type (known before the body is read). */
function isFormPost(request: FastifyRequest): boolean {
  const type = request.headers['content-type'];
  return type !== undefined && type.split(';', 1)[0]!.trim().toLowerCase() === 'application/x-www-form-urlencoded';
}

/** A query parameter given exactly once; duplicated or absent → undefined. */
function singleQueryValue(request: FastifyRequest, name: string): string | undefined {
  const value = (request.query as Record<string, unknown> | undefined)?.[name];
  return typeof value === 'string' ? value : undefined;
}

/** The browser's User-Agent, bounded: it is shown back to its user in GET /auth/sessions. */
function userAgentOf(request: FastifyRequest): { userAgent?: string } {
  const agent = request.headers['user-agent'];
  return typeof agent === 'string' && agent !== '' ? { userAgent: agent.slice(0, 256) } : {};
}
