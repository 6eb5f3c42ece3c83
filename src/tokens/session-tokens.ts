import { andThen, type Awaitable } from '../awaitable.js';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { BrowserError, idpUnavailable, loginRequired } from '../errors.js';
import { ProviderError } from '../oidc/errors.js';
import type { LoadedSession, SessionManager } from '../session/manager.js';
import type { SessionRecord } from '../session/record.js';
import { isAccessTokenDue, type RefreshReason, type TokenRefresher } from './refresher.js';
import type { TokenRevoker } from './revoker.js';
import { SessionEndedError } from '../session/store.js';

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
 * the browser errors DESIGN.md prescribes.
 */
export class SessionTokens {
  constructor(private readonly options: SessionTokensOptions) {}

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
    try {
      const saved = await sessions.save(request, reply, record, loaded);
      return { record: saved, cookieValue: loaded.cookieValue };
    } catch (err) {
      // The session ended while the provider answered: its new tokens must not live on.
      if (err instanceof SessionEndedError) await this.options.revoker.revoke([record], request.log, 'refreshed after the session ended');
      throw err;
    }
  }

  private async failure(request: FastifyRequest, reply: FastifyReply, record: SessionRecord, err: unknown): Promise<BrowserError> {
    if (!(err instanceof ProviderError)) throw err;
    // The provider's own Retry-After when it sent one (429, 503), else ours.
    const unavailable = () => idpUnavailable(err.retryAfterSeconds ?? this.options.retryAfterSeconds);
    switch (err.kind) {
      case 'invalid_grant':
        request.log.info(err.logFields(), 'refresh refused: the grant is unusable; session ended');
        await this.options.sessions.end(request, reply, record, 'invalid_grant');
        return loginRequired('The session has ended at the identity provider: sign in again.');
      case 'transient':
        request.log.warn(err.logFields(), 'refresh failed: provider unavailable; session kept');
        return unavailable();
      case 'config_fault':
        request.log.error(err.logFields(), 'refresh failed: client configuration fault at the provider; session kept');
        return unavailable();
      case 'invalid_response':
        request.log.error(err.logFields(), 'refresh failed: provider response rejected; session kept');
        return unavailable();
    }
  }
}
