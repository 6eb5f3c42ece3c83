import { createHash } from 'node:crypto';
import type { FastifyBaseLogger } from 'fastify';
import type { TokenSet } from '../oidc/token-set.js';
import { ProviderError } from '../oidc/errors.js';
import { withDeadline, type OidcProvider } from '../oidc/provider.js';
import type { Metrics } from '../ops/metrics.js';
import { BoundedTtlCache } from '../state/bounded-cache.js';
import { SingleFlight } from './single-flight.js';
import { type SessionRecord, sessionHash } from '../state/record.js';
import type { RefreshCoordinator } from '../state/ports.js';

export interface RefresherOptions {
  provider: Pick<OidcProvider, 'refresh'>;
  coordinator?: RefreshCoordinator;
  /** How long a refresh result stays available to requests still carrying the spent refresh token. */
  resultTtlMs: number;
  resultMaxEntries: number;
  /** A token due within this many ms counts as spent. */
  refreshSkewMs: number;
  /**
   * How long a request waits for a refresh (`oidc.timeoutMs`). The refresh itself goes on
   * past that, and its late result is remembered for the next request.
   */
  waitMs: number;
  now: () => number;
  logger: FastifyBaseLogger;
  metrics?: Metrics;
}

export type RefreshReason = 'proactive' | 'upstream_401' | 'forced';

/**
 * Refreshes a session's tokens so that one refresh token is spent at most once
 * (docs/contracts.md "Refresh-token rules": reuse under rotation may revoke the whole grant):
 * - concurrent refreshes of the same refresh token share one token-endpoint call;
 * - the result is remembered for a short window, keyed by a hash of the spent refresh
 *   token, so a request that still carries the old cookie (another tab, a response
 *   still in flight) gets the same new tokens instead of replaying a dead token.
 */
export class TokenRefresher {
  private readonly flights = new SingleFlight<TokenSet>();
  private readonly results: BoundedTtlCache<TokenSet>;

  constructor(private readonly options: RefresherOptions) {
    this.results = new BoundedTtlCache(options.resultMaxEntries, options.resultTtlMs, options.now);
  }

  /**
   * The session with refreshed tokens. Throws ProviderError (kind says what it means
   * for the session). `joined` is true when this call used another request's refresh.
   */
  async refresh(record: SessionRecord, reason: RefreshReason): Promise<{ record: SessionRecord; joined: boolean }> {
    const { record: current, usable } = this.followRemembered(record);
    if (usable) {
      this.options.metrics?.refreshJoined();
      return { record: current, joined: true };
    }
    const refreshToken = current.refreshToken;
    if (!refreshToken) throw new ProviderError('invalid_grant', 'session has no refresh token');
    const key = refreshTokenKey(refreshToken);
    const session = sessionHash(record);
    const flight = this.flights.run(key, async () => {
      const { coordinator } = this.options;
      const tokens = coordinator
        ? await coordinator.coordinate(key, () => this.callProvider(refreshToken, reason, session))
        : await this.callProvider(refreshToken, reason, session);
      this.results.set(key, tokens);
      return tokens;
    });
    // The browser gets its answer in time; the refresh goes on, and requests that come
    // meanwhile join it (same key), so the refresh token is still spent only once.
    const { value, joined } = await withDeadline(
      flight,
      this.options.waitMs,
      () => new ProviderError('transient', `refresh: no answer within ${this.options.waitMs} ms; it goes on and its result will be used`),
    );
    if (joined) this.options.metrics?.refreshJoined();
    return { record: applyTokens(current, value, this.options.now()), joined };
  }

  /** One token-endpoint call, logged at info (session hash, outcome, duration; never a token). */
  private async callProvider(refreshToken: string, reason: RefreshReason, session: string): Promise<TokenSet> {
    const started = performance.now();
    const durationMs = () => Math.round(performance.now() - started);
    try {
      const tokens = await this.options.provider.refresh(refreshToken);
      this.options.metrics?.refreshAttempt('success', (performance.now() - started) / 1000);
      this.options.logger.info({ session, reason, outcome: 'success', rotated: !!tokens.refreshToken, durationMs: durationMs() }, 'refresh');
      return tokens;
    } catch (err) {
      const outcome = err instanceof ProviderError ? err.kind : 'transient';
      this.options.metrics?.refreshAttempt(outcome, (performance.now() - started) / 1000);
      this.options.logger.info({ session, reason, outcome, durationMs: durationMs() }, 'refresh');
      throw err;
    }
  }

  /**
   * The tokens that refreshes of this record's refresh token obtained, or are obtaining:
   * remembered here or (Redis) by another replica, or still running here (waited for up to
   * `waitMs`). What a logout revokes besides the record's own, so a refresh that raced the
   * logout leaves no live grant behind.
   */
  async successors(record: SessionRecord, waitMs: number): Promise<TokenSet[]> {
    const found: TokenSet[] = [];
    let refreshToken = record.refreshToken;
    for (let hops = 0; hops < 4 && refreshToken; hops++) {
      const key = refreshTokenKey(refreshToken);
      const running = this.flights.current(key);
      const next =
        this.results.get(key) ??
        (running ? await withDeadline(running, waitMs, () => new Error('still running')).catch(() => undefined) : undefined) ??
        (await this.options.coordinator?.remembered(key).catch(() => null)) ??
        undefined;
      if (!next) break;
      found.push(next);
      if (next.refreshToken === undefined || next.refreshToken === refreshToken) break;
      refreshToken = next.refreshToken;
    }
    return found;
  }

  /**
   * The record brought up to date with refreshes that already happened for its refresh
   * token (another tab, a response still in flight), or null when there were none.
   * Cheap: one hash and a map lookup, so it runs on every request.
   */
  catchUp(record: SessionRecord): SessionRecord | null {
    const { record: current } = this.followRemembered(record);
    if (current === record) return null;
    this.options.metrics?.refreshJoined();
    return current;
  }

  /** Whether a refresh already replaced this record's tokens (one is remembered for its refresh token). */
  hasNewer(record: SessionRecord): boolean {
    return this.followRemembered(record).record !== record;
  }

  /**
   * Follows remembered results: each maps a spent refresh token to its successor, so an
   * old cookie catches up without spending any token twice. `usable` when the result's
   * access token is not due yet.
   */
  private followRemembered(record: SessionRecord): { record: SessionRecord; usable: boolean } {
    let current = record;
    for (let hops = 0; hops < 4 && current.refreshToken; hops++) {
      if (this.results.size === 0) break;
      const remembered = this.results.get(recordRefreshKey(current as SessionRecord & { refreshToken: string }));
      // Nothing remembered, or already applied (e.g. a non-rotating provider's refresh token
      // maps to the very tokens this record holds): a real refresh is what is needed.
      if (!remembered || remembered.accessToken === current.accessToken) break;
      const rotated = remembered.refreshToken !== undefined && remembered.refreshToken !== current.refreshToken;
      current = applyTokens(current, remembered, this.options.now());
      if (!isAccessTokenDue(current, this.options.now(), this.options.refreshSkewMs)) return { record: current, usable: true };
      // Not rotated: the same refresh token is still good for a real refresh.
      if (!rotated) break;
    }
    return { record: current, usable: false };
  }
}

/** Hash, so the cache never holds a usable refresh token as a key. */
export function refreshTokenKey(refreshToken: string): string {
  return createHash('sha256').update(refreshToken).digest('base64url');
}

/**
 * The key of a record's refresh token, computed once per record object: the unseal cache
 * hands the same object to every request of a cookie, so the hot path hashes nothing.
 */
const recordKeys = new WeakMap<SessionRecord, string>();
function recordRefreshKey(record: SessionRecord & { refreshToken: string }): string {
  let key = recordKeys.get(record);
  if (key === undefined) {
    key = refreshTokenKey(record.refreshToken);
    recordKeys.set(record, key);
  }
  return key;
}

/**
 * Rotation rules (docs/contracts.md "Refresh-token rules"): a new refresh token replaces the old one, none keeps it;
 * a new ID token replaces the old one and must be about the same user.
 */
export function applyTokens(record: SessionRecord, tokens: TokenSet, now: number): SessionRecord {
  if (tokens.claims && tokens.claims.sub !== record.claims.sub) {
    throw new ProviderError('invalid_response', 'refreshed ID token is about another subject');
  }
  return {
    ...record,
    accessToken: tokens.accessToken,
    tokenType: tokens.tokenType,
    accessTokenExpiresAt: tokens.accessTokenExpiresAt,
    refreshToken: tokens.refreshToken ?? record.refreshToken,
    idToken: tokens.idToken ?? record.idToken,
    scope: tokens.scope ?? record.scope,
    claims: tokens.claims ? withLoginFacts(tokens.claims, record.claims) : record.claims,
    refreshedAt: now,
  };
}

/**
 * A refresh is not a sign-in: when the refreshed ID token leaves out how and when the user
 * signed in (acr, amr, auth_time; providers need not repeat them), the login's values stay.
 */
function withLoginFacts(claims: Record<string, unknown>, previous: Record<string, unknown>): Record<string, unknown> {
  let merged = claims;
  for (const name of ['acr', 'amr', 'auth_time']) {
    if (merged[name] === undefined && previous[name] !== undefined) merged = { ...merged, [name]: previous[name] };
  }
  return merged;
}

/**
 * Whether the access token is gone or will be within the skew. The skew never exceeds
 * half the token's life, so short-lived tokens (say 30 s with the default 30 s skew) are
 * not refreshed on every single call.
 */
export function isAccessTokenDue(record: SessionRecord, now: number, skewMs: number): boolean {
  const life = record.accessTokenExpiresAt - (record.refreshedAt ?? record.createdAt);
  return record.accessTokenExpiresAt - Math.min(skewMs, life / 2) <= now;
}
