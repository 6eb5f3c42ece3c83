import { andThen, type Awaitable } from '../awaitable.js';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { loginRequired, type BrowserError } from '../errors.js';
import { answerProviderFailure } from '../failures.js';
import { ProviderError } from '../oidc/errors.js';
import type { LoadedSession, SessionManager } from '../session/manager.js';
import { BoundedTtlCache } from '../state/bounded-cache.js';
import { isAccessTokenDue, refreshTokenKey, type RefreshReason, type TokenRefresher } from './refresher.js';
import type { TokenRevoker } from './revoker.js';
import { SessionEndedError } from '../state/ports.js';
import { sessionHash, type SessionRecord } from '../state/record.js';

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
  mayRefreshAfter401(record: SessionRecord): boolean {
    if (this.refreshedAfter401.size === 0) return true;
    if (this.refreshedAfter401.get(refreshTokenKey(record.accessToken)) === undefined) return true;
    return this.options.refresher.hasNewer(record);
  }

  /**
   * The session, refreshed if due. Throws `login_required` when there is none.
   * Synchronous (a value, or a throw) when nothing has to wait: the usual proxied request.
   */
  current(request: FastifyRequest, reply: FastifyReply): Awaitable<LoadedSession> {
    return andThen(this.options.sessions.load(request, reply), (loaded) => this.usable(request, reply, loaded));
  }

  private usable(request: FastifyRequest, reply: FastifyReply, loaded: LoadedSession | null): Awaitable<LoadedSession> {
    if (!loaded) throw loginRequired();
    const { sessions, refresher, refreshSkewMs, now } = this.options;
    const caughtUp = refresher.catchUp(loaded.record);
    if (caughtUp && !isAccessTokenDue(caughtUp, now(), refreshSkewMs)) {
      // This browser still sent the cookie from before a refresh: hand out the new tokens.
      return andThen(sessions.save(request, reply, caughtUp, loaded), (record) => ({ record, cookieValue: loaded.cookieValue }));
    }
    const { record } = loaded;
    if (isAccessTokenDue(record, now(), refreshSkewMs)) {
      if (!record.refreshToken && record.accessTokenExpiresAt <= now()) return this.expiredWithoutRefresh(request, reply, record);
      if (record.refreshToken) return this.refresh(request, reply, loaded, 'proactive');
    }
    return andThen(sessions.touch(request, reply, loaded), (touched) => (touched === record ? loaded : { record: touched, cookieValue: loaded.cookieValue }));
  }

  private async expiredWithoutRefresh(request: FastifyRequest, reply: FastifyReply, record: SessionRecord): Promise<never> {
    await this.options.sessions.end(request, reply, record, 'invalid_grant');
    throw loginRequired('The access token expired and the session cannot be refreshed: sign in again.');
  }

  /** Refreshes now (proactively, forced, or after an upstream 401) and stores the result. */
  async refresh(request: FastifyRequest, reply: FastifyReply, loaded: LoadedSession, reason: RefreshReason): Promise<LoadedSession> {
    const { sessions, refresher } = this.options;
    let record: SessionRecord;
    try {
      ({ record } = await refresher.refresh(loaded.record, reason));
    } catch (err) {
      throw await this.failure(request, reply, loaded.record, err);
    }
    if (reason === 'upstream_401') {
      const rejected = loaded.record;
      this.refreshedAfter401.set(refreshTokenKey(rejected.accessToken), true, Math.max(1000, rejected.accessTokenExpiresAt - this.options.now()));
    }
    try {
      const saved = await sessions.save(request, reply, record, loaded);
      sessions.signal({ kind: 'refreshed', match: { sessionHash: sessionHash(saved) }, accessTokenExpiresAt: saved.accessTokenExpiresAt, lastSeenAt: saved.lastSeenAt }, request.log);
      return { record: saved, cookieValue: loaded.cookieValue };
    } catch (err) {
      // The session ended while the provider answered: its new tokens must not live on.
      if (err instanceof SessionEndedError) await this.options.revoker.revoke([record], request.log, 'refreshed after the session ended');
      throw err;
    }
  }

  private async failure(request: FastifyRequest, reply: FastifyReply, record: SessionRecord, err: unknown): Promise<BrowserError> {
    if (!(err instanceof ProviderError)) throw err;
    const answer = answerProviderFailure(err, 'refresh', request.log, this.options.retryAfterSeconds);
    // A refused grant is the end of the session; every other failure keeps it.
    if (err.kind === 'invalid_grant') await this.options.sessions.end(request, reply, record, 'invalid_grant');
    return answer;
  }

}
