import type { FastifyBaseLogger } from 'fastify';
import { ProviderError } from '../oidc/errors.js';
import type { OidcProvider } from '../oidc/provider.js';
import { BoundedTtlCache } from '../state/bounded-cache.js';
import { refreshTokenKey } from './refresher.js';

/** Tokens a record holds, as far as revocation is concerned. */
export interface RevocableTokens {
  accessToken: string;
  refreshToken?: string | undefined;
}

/** How long a revoked token is remembered, so the same token is not sent twice by parallel requests. */
const REMEMBER_MS = 5 * 60_000;

/**
 * Revokes (RFC 7009) the grant behind tokens that must not outlive their session: the
 * refresh token at logout, and tokens a refresh obtained for a session that ended while it
 * ran. The refresh token where there is one (revoking it ends the grant at most providers),
 * else the access token. Failures are logged, never thrown: the session ends either way.
 */
export class TokenRevoker {
  private readonly revoked: BoundedTtlCache<true>;

  constructor(
    private readonly provider: Pick<OidcProvider, 'revoke'>,
    now: () => number,
  ) {
    this.revoked = new BoundedTtlCache(10_000, REMEMBER_MS, now);
  }

  /** Revokes each distinct token of these sets once; resolves when every call has answered. */
  async revoke(sets: ReadonlyArray<RevocableTokens | null | undefined>, log: FastifyBaseLogger, why: string): Promise<void> {
    const calls: Array<Promise<void>> = [];
    for (const set of sets) {
      if (!set) continue;
      const [token, hint] = set.refreshToken ? [set.refreshToken, 'refresh_token' as const] : [set.accessToken, 'access_token' as const];
      const key = refreshTokenKey(token);
      if (this.revoked.get(key)) continue;
      this.revoked.set(key, true);
      calls.push(this.revokeOne(token, hint, log, why));
    }
    await Promise.all(calls);
  }

  private async revokeOne(token: string, hint: 'refresh_token' | 'access_token', log: FastifyBaseLogger, why: string): Promise<void> {
    try {
      const done = await this.provider.revoke(token, hint);
      log.info({ hint, why, revoked: done }, done ? 'token revoked at the provider' : 'token not revoked: the provider has no revocation endpoint');
    } catch (err) {
      const fields = err instanceof ProviderError ? err.logFields() : { err: err instanceof Error ? err.message : String(err) };
      log.warn({ ...fields, hint, why }, 'token revocation failed; the session is ended locally all the same');
    }
  }
}
