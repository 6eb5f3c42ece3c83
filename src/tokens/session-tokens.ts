import { andThen, type Awaitable } from '../awaitable.js';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { loginRequired, tokenUnavailable, type BrowserError } from '../errors.js';
import { answerProviderFailure } from '../failures.js';
import { ProviderError } from '../oidc/errors.js';
import type { LoadedSession, SessionManager } from '../session/manager.js';
import { BoundedTtlCache } from '../state/bounded-cache.js';
import { isAccessTokenDue, refreshTokenKey, type RefreshReason, type RefreshWant, type TokenRefresher } from './refresher.js';
import type { TokenRevoker } from './revoker.js';
import { SessionEndedError } from '../state/ports.js';
import { isApiTokenDue, sessionHash, type SessionRecord } from '../state/record.js';

const MAIN: RefreshWant = { main: true, resources: [] };

export interface SessionTokensOptions {
  sessions: SessionManager;
  refresher: TokenRefresher;
  /** Revokes tokens a refresh obtained for a session that ended while it ran. */
  revoker: TokenRevoker;
  refreshSkewMs: number;
  now: () => number;
  /** Seconds a browser should wait after idp_unavailable. */
  retryAfterSeconds: number;
}

/**
 * A request's session with a usable access token: loads the session, refreshes when the
 * token is due, stores the result and sends the updated cookie. Refresh failures become
 * the browser errors of docs/contracts.md "Refresh outcomes".
 */
export class SessionTokens {
  /**
   * Access tokens (hashed) that an upstream rejected and that were then refreshed, each
   * kept until it expires: a second 401 for one of them is passed on instead of spending
   * another refresh (see mayRefreshAfter401).
   */
  private readonly refreshedAfter401 = new BoundedTtlCache<true>(100_000, 3_600_000, () => this.options.now());

  constructor(private readonly options: SessionTokensOptions) {}

  /**
   * The session, for routes that need one but no user token (`token: client` and
   * `token: none` without `anonymous`): login_required without one; the idle timeout slides.
   */
  present(request: FastifyRequest, reply: FastifyReply): Awaitable<LoadedSession> {
    const { sessions } = this.options;
    return andThen(sessions.load(request, reply), (loaded) => {
      if (!loaded) throw loginRequired();
      return andThen(sessions.touch(request, reply, loaded), (touched) => (touched === loaded.record ? loaded : { record: touched, cookieValue: loaded.cookieValue }));
    });
  }

  /**
   * After an upstream 401: whether to refresh and replay. At most one refresh per access
   * token: once a rejected token has been refreshed, a later 401 for it (an old cookie, a
   * replay that keeps being rejected) is passed on, unless the refresh it got is still
   * remembered (using it costs the provider nothing).
   */
  mayRefreshAfter401(record: SessionRecord, rejectedAccessToken: string = record.accessToken): boolean {
    if (this.refreshedAfter401.size === 0) return true;
    if (this.refreshedAfter401.get(refreshTokenKey(rejectedAccessToken)) === undefined) return true;
    return this.options.refresher.hasNewer(record);
  }

  /**
   * The session, refreshed if due. Throws `login_required` when there is none.
   * Synchronous (a value, or a throw) when nothing has to wait: the usual proxied request.
   */
  current(request: FastifyRequest, reply: FastifyReply): Awaitable<LoadedSession> {
    return andThen(this.options.sessions.load(request, reply), (loaded) => this.usable(request, reply, loaded, MAIN));
  }

  /**
   * The session with a usable token for each resource of `want` (RFC 8707 routes), refreshed
   * if due: through the same refresher as the session's own token, so every grant that
   * spends the refresh token is one single-flight per refresh token.
   */
  currentFor(request: FastifyRequest, reply: FastifyReply, want: RefreshWant): Awaitable<LoadedSession> {
    return andThen(this.options.sessions.load(request, reply), (loaded) => this.usable(request, reply, loaded, want));
  }

  private isDue(record: SessionRecord, want: RefreshWant): boolean {
    const { refreshSkewMs, now } = this.options;
    if (want.main && isAccessTokenDue(record, now(), refreshSkewMs)) return true;
    for (const resource of want.resources) if (isApiTokenDue(record.resourceTokens?.[resource], now(), refreshSkewMs)) return true;
    return false;
  }

  private usable(request: FastifyRequest, reply: FastifyReply, loaded: LoadedSession | null, want: RefreshWant): Awaitable<LoadedSession> {
    if (!loaded) throw loginRequired();
    const { sessions, refresher, now } = this.options;
    const caughtUp = refresher.catchUp(loaded.record, want);
    if (caughtUp && !this.isDue(caughtUp, want)) {
      // This browser still sent the cookie from before a refresh: hand out the new tokens.
      return andThen(sessions.save(request, reply, caughtUp, loaded), (record) => ({ record, cookieValue: loaded.cookieValue }));
    }
    const { record } = loaded;
    if (this.isDue(record, want)) {
      if (!record.refreshToken) {
        if (want.main && record.accessTokenExpiresAt <= now()) return this.expiredWithoutRefresh(request, reply, record);
        const missing = want.resources.find((resource) => (record.resourceTokens?.[resource]?.expiresAt ?? 0) <= now());
        if (missing !== undefined) {
          request.log.error({ resource: missing }, 'resource token unavailable: the session has no refresh token to ask for it with (ask for offline_access, or use the session token)');
          throw tokenUnavailable();
        }
      } else return this.refresh(request, reply, loaded, 'proactive', want);
    }
    return andThen(sessions.touch(request, reply, loaded), (touched) => (touched === record ? loaded : { record: touched, cookieValue: loaded.cookieValue }));
  }

  private async expiredWithoutRefresh(request: FastifyRequest, reply: FastifyReply, record: SessionRecord): Promise<never> {
    await this.options.sessions.end(request, reply, record, 'invalid_grant');
    throw loginRequired('The access token expired and the session cannot be refreshed: sign in again.');
  }

  /** Refreshes now (proactively, forced, or after an upstream 401) and stores the result. */
  /**
   * Refreshes now (proactively, forced, after an upstream 401, or after a token exchange
   * refused the user's token) and stores the result. `want`: what must come out of it (the
   * session's own token by default; resource tokens for RFC 8707 routes). `rejected`: the
   * access token an upstream refused, refreshed at most once.
   */
  async refresh(
    request: FastifyRequest,
    reply: FastifyReply,
    loaded: LoadedSession,
    reason: RefreshReason,
    want: RefreshWant = MAIN,
    rejected: { accessToken: string; expiresAt: number } = { accessToken: loaded.record.accessToken, expiresAt: loaded.record.accessTokenExpiresAt },
  ): Promise<LoadedSession> {
    const { sessions, refresher } = this.options;
    let record: SessionRecord;
    let failure: ProviderError | undefined;
    try {
      ({ record, failure } = await refresher.refresh(loaded.record, reason, want));
    } catch (err) {
      throw await this.failure(request, reply, loaded.record, err);
    }
    if (reason === 'upstream_401') {
      this.refreshedAfter401.set(refreshTokenKey(rejected.accessToken), true, Math.max(1000, rejected.expiresAt - this.options.now()));
    }
    let saved: SessionRecord;
    try {
      saved = await sessions.save(request, reply, record, loaded);
      sessions.signal({ kind: 'refreshed', match: { sessionHash: sessionHash(saved) }, accessTokenExpiresAt: saved.accessTokenExpiresAt, lastSeenAt: saved.lastSeenAt }, request.log);
    } catch (err) {
      // The session ended while the provider answered: its new tokens must not live on.
      if (err instanceof SessionEndedError) await this.options.revoker.revoke([record], request.log, 'refreshed after the session ended');
      throw err;
    }
    // Some resource token of `want` was refused after the refresh token was spent for others:
    // the new refresh token is saved above, this call gets its answer.
    if (failure) throw await this.failure(request, reply, saved, failure);
    return { record: saved, cookieValue: loaded.cookieValue };
  }

  private async failure(request: FastifyRequest, reply: FastifyReply, record: SessionRecord, err: unknown): Promise<BrowserError> {
    if (!(err instanceof ProviderError)) throw err;
    const answer = answerProviderFailure(err, err.api === undefined ? 'refresh' : 'resource token', request.log, this.options.retryAfterSeconds);
    // A refused grant is the end of the session; every other failure keeps it.
    if (err.kind === 'invalid_grant') await this.options.sessions.end(request, reply, record, 'invalid_grant');
    return answer;
  }

}
