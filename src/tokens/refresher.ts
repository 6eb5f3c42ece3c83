import { createHash } from 'node:crypto';
import type { FastifyBaseLogger } from 'fastify';
import type { TokenSet } from '../oidc/token-set.js';
import { ProviderError } from '../oidc/errors.js';
import { withDeadline, type OidcProvider } from '../oidc/provider.js';
import type { Metrics } from '../ops/metrics.js';
import { BoundedTtlCache } from '../state/bounded-cache.js';
import { SingleFlight } from './single-flight.js';
import { type ApiToken, type SessionRecord, isApiTokenDue, sessionHash, tokenVersion } from '../state/record.js';
import type { RefreshCoordinator } from '../state/ports.js';
import type { DpopKey } from '../oidc/dpop.js';

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
  /** The route prefix(es) of a resource, for metrics by route. */
  routeOfResource?: (resource: string) => string;
  /** oidc.dpop: the key a session's tokens are bound to; every refresh proves it (the binding stays). */
  dpopKeyOf?: (record: SessionRecord) => DpopKey | undefined;
}

export type RefreshReason = 'proactive' | 'upstream_401' | 'forced' | 'exchange_refused';

/**
 * What a refresh must obtain: the session's own access token (`main`) and/or tokens for
 * RFC 8707 resources. Whatever else is due in the record is refreshed in the same go.
 */
export interface RefreshWant {
  main: boolean;
  resources: readonly string[];
}

const MAIN: RefreshWant = { main: true, resources: [] };

/**
 * The result of one refresh, remembered by the spent refresh token's hash (in process and,
 * sealed, in Redis). One refresh is a chain of refresh_token grants, one per token wanted
 * (the session's own, then one per resource), each spending the refresh token the previous
 * one returned: under rotation, every resource grant spends the refresh token too. The
 * top-level fields are the session's own tokens (copied from the record when `main` is
 * false) and the last refresh token of the chain.
 */
export interface RefreshOutcome extends TokenSet {
  /** Whether the session's own access token was refreshed (absent: true, results of older versions). */
  main?: boolean;
  resources?: Record<string, ApiToken>;
  /** A resource whose grant failed after earlier grants of the chain succeeded. */
  failed?: { api: string; kind: ProviderError['kind']; message: string; oauthError?: string; retryAfterSeconds?: number };
}

/**
 * Refreshes a session's tokens so that one refresh token is spent at most once
 * (docs/contracts.md "Refresh-token rules": reuse under rotation may revoke the whole grant):
 * - concurrent refreshes of the same refresh token share one token-endpoint call;
 * - the result is remembered for a short window, keyed by a hash of the spent refresh
 *   token, so a request that still carries the old cookie (another tab, a response
 *   still in flight) gets the same new tokens instead of replaying a dead token.
 */
export class TokenRefresher {
  private readonly flights = new SingleFlight<RefreshOutcome>();
  private readonly results: BoundedTtlCache<RefreshOutcome>;

  constructor(private readonly options: RefresherOptions) {
    this.results = new BoundedTtlCache(options.resultMaxEntries, options.resultTtlMs, options.now);
  }

  /**
   * The session with refreshed tokens. Throws ProviderError (kind says what it means
   * for the session). `joined` is true when this call used another request's refresh.
   * `failure`: a resource token of `want` could not be obtained although the chain spent
   * the refresh token for others; the record must still be saved.
   *
   * Every refresh of a session, whatever it is for, is keyed by the refresh token: one
   * single-flight and one cross-replica lock per refresh token. A request that joined a
   * refresh which did not cover what it wants goes again with the new refresh token.
   */
  async refresh(
    record: SessionRecord,
    reason: RefreshReason,
    want: RefreshWant = MAIN,
  ): Promise<{ record: SessionRecord; joined: boolean; failure?: ProviderError }> {
    let current = record;
    let joinedAny = false;
    for (let hop = 0; hop < 4; hop++) {
      const followed = this.followRemembered(current, want);
      if (followed.usable) {
        this.options.metrics?.refreshJoined();
        return { record: followed.record, joined: true };
      }
      current = followed.record;
      const refreshToken = current.refreshToken;
      if (!refreshToken) throw new ProviderError('invalid_grant', 'session has no refresh token');
      const key = refreshTokenKey(refreshToken);
      const session = sessionHash(record);
      const plan = planFor(current, want, this.options.now(), this.options.refreshSkewMs);
      const base = current;
      const flight = this.flights.run(key, async () => {
        const { coordinator } = this.options;
        const outcome = coordinator
          ? ((await coordinator.coordinate(key, () => this.callChain(base, refreshToken, plan, reason, session))) as RefreshOutcome)
          : await this.callChain(base, refreshToken, plan, reason, session);
        this.results.set(key, outcome);
        return outcome;
      });
      // The browser gets its answer in time; the refresh goes on, and requests that come
      // meanwhile join it (same key), so the refresh token is still spent only once.
      const { value, joined } = await withDeadline(
        flight,
        this.options.waitMs,
        () => new ProviderError('transient', `refresh: no answer within ${this.options.waitMs} ms; it goes on and its result will be used`),
      );
      if (joined) this.options.metrics?.refreshJoined();
      joinedAny ||= joined;
      current = applyTokens(current, value, this.options.now());
      const failed = value.failed && want.resources.includes(value.failed.api) && !value.resources?.[value.failed.api] ? value.failed : undefined;
      if (failed) {
        const failure = new ProviderError(failed.kind, failed.message, {
          api: failed.api,
          ...(failed.oauthError !== undefined ? { oauthError: failed.oauthError } : {}),
          ...(failed.retryAfterSeconds !== undefined ? { retryAfterSeconds: failed.retryAfterSeconds } : {}),
        });
        return { record: current, joined: joinedAny, failure };
      }
      if (covers(value, want)) return { record: current, joined: joinedAny };
    }
    throw new ProviderError('transient', 'refresh: the tokens wanted were not obtained after several refreshes of this session');
  }

  /**
   * One refresh: a chain of token-endpoint calls, each spending the refresh token the
   * previous one returned (the session's own token first, then each resource). A failure
   * of the first call throws; a later one is recorded in the outcome, which keeps the new
   * refresh token (the old one is spent).
   */
  private async callChain(record: SessionRecord, refreshToken: string, plan: RefreshWant, reason: RefreshReason, session: string): Promise<RefreshOutcome> {
    let outcome: RefreshOutcome = {
      main: false,
      accessToken: record.accessToken,
      tokenType: record.tokenType,
      accessTokenExpiresAt: record.accessTokenExpiresAt,
      refreshToken,
      ...(record.scope !== undefined ? { scope: record.scope } : {}),
    };
    const steps: Array<string | undefined> = [...(plan.main ? [undefined] : []), ...plan.resources];
    const dpopKey = this.options.dpopKeyOf?.(record);
    let rt = refreshToken;
    for (const [index, resource] of steps.entries()) {
      let tokens: TokenSet;
      try {
        tokens = await this.callProvider(rt, reason, session, resource, dpopKey);
      } catch (err) {
        const failure = err instanceof ProviderError ? err : new ProviderError('transient', err instanceof Error ? err.message : String(err), { cause: err });
        if (index === 0 || failure.kind === 'invalid_grant' || resource === undefined) {
          throw resource === undefined ? failure : withApi(failure, resource);
        }
        outcome.failed = {
          api: resource,
          kind: failure.kind,
          message: failure.message,
          ...(failure.oauthError !== undefined ? { oauthError: failure.oauthError } : {}),
          ...(failure.retryAfterSeconds !== undefined ? { retryAfterSeconds: failure.retryAfterSeconds } : {}),
        };
        break;
      }
      rt = tokens.refreshToken ?? rt;
      if (resource === undefined) {
        outcome = { ...outcome, ...tokens, main: true, refreshToken: rt };
      } else {
        outcome.resources = {
          ...outcome.resources,
          [resource]: { accessToken: tokens.accessToken, tokenType: tokens.tokenType, expiresAt: tokens.accessTokenExpiresAt, obtainedAt: this.options.now() },
        };
        outcome.refreshToken = rt;
        if (tokens.idToken) outcome.idToken = tokens.idToken;
        if (tokens.claims) outcome.claims = tokens.claims;
      }
    }
    return outcome;
  }

  private routeOf(resource: string): string {
    return this.options.routeOfResource?.(resource) ?? resource;
  }

  /** One token-endpoint call, logged at info (session hash, outcome, duration; never a token). */
  private async callProvider(refreshToken: string, reason: RefreshReason, session: string, resource?: string, dpopKey?: DpopKey): Promise<TokenSet> {
    const started = performance.now();
    const durationMs = () => Math.round(performance.now() - started);
    const target = resource === undefined ? {} : { resource };
    try {
      const tokens = await this.options.provider.refresh(refreshToken, undefined, resource, dpopKey);
      this.options.metrics?.refreshAttempt('success', (performance.now() - started) / 1000);
      if (resource !== undefined) this.options.metrics?.apiTokenGrant(this.routeOf(resource), 'resource', 'success', (performance.now() - started) / 1000);
      this.options.logger.info({ session, reason, ...target, outcome: 'success', rotated: !!tokens.refreshToken, durationMs: durationMs() }, 'refresh');
      return tokens;
    } catch (err) {
      const outcome = err instanceof ProviderError ? err.kind : 'transient';
      this.options.metrics?.refreshAttempt(outcome, (performance.now() - started) / 1000);
      if (resource !== undefined) this.options.metrics?.apiTokenGrant(this.routeOf(resource), 'resource', outcome, (performance.now() - started) / 1000);
      this.options.logger.info({ session, reason, ...target, outcome, durationMs: durationMs() }, 'refresh');
      throw err;
    }
  }

  /**
   * The tokens that refreshes of this record's refresh token obtained, or are obtaining:
   * remembered here or (Redis) by another replica, or still running here (waited for up to
   * `waitMs`). What a logout revokes besides the record's own, so a refresh that raced the
   * logout leaves no live grant behind.
   */
  async successors(record: SessionRecord, waitMs: number): Promise<RefreshOutcome[]> {
    const found: RefreshOutcome[] = [];
    let refreshToken = record.refreshToken;
    for (let hops = 0; hops < 4 && refreshToken; hops++) {
      const key = refreshTokenKey(refreshToken);
      const running = this.flights.current(key);
      const next =
        this.results.get(key) ??
        (running ? await withDeadline(running, waitMs, () => new Error('still running')).catch(() => undefined) : undefined) ??
        ((await this.options.coordinator?.remembered(key).catch(() => null)) as RefreshOutcome | null | undefined) ??
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
  catchUp(record: SessionRecord, want: RefreshWant = MAIN): SessionRecord | null {
    const { record: current } = this.followRemembered(record, want);
    if (current === record) return null;
    this.options.metrics?.refreshJoined();
    return current;
  }

  /** Whether a refresh already replaced this record's tokens (one is remembered for its refresh token). */
  hasNewer(record: SessionRecord): boolean {
    return this.followRemembered(record, MAIN).record !== record;
  }

  /**
   * Follows remembered results: each maps a spent refresh token to its successor, so an
   * old cookie catches up without spending any token twice. `usable` when the result's
   * access token is not due yet.
   */
  private followRemembered(record: SessionRecord, want: RefreshWant): { record: SessionRecord; usable: boolean } {
    let current = record;
    for (let hops = 0; hops < 4 && current.refreshToken; hops++) {
      if (this.results.size === 0) break;
      const remembered = this.results.get(recordRefreshKey(current as SessionRecord & { refreshToken: string }));
      // Nothing remembered, or already applied (e.g. a non-rotating provider's refresh token
      // maps to the very tokens this record holds): a real refresh is what is needed.
      if (!remembered || isApplied(current, remembered)) break;
      const rotated = remembered.refreshToken !== undefined && remembered.refreshToken !== current.refreshToken;
      current = applyTokens(current, remembered, this.options.now());
      if (isFresh(current, want, this.options.now(), this.options.refreshSkewMs)) return { record: current, usable: true };
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
export function applyTokens(record: SessionRecord, tokens: RefreshOutcome, now: number): SessionRecord {
  if (tokens.claims && tokens.claims.sub !== record.claims.sub) {
    throw new ProviderError('invalid_response', 'refreshed ID token is about another subject');
  }
  const next: SessionRecord = {
    ...record,
    refreshToken: tokens.refreshToken ?? record.refreshToken,
    idToken: tokens.idToken ?? record.idToken,
    claims: tokens.claims ? withLoginFacts(tokens.claims, record.claims) : record.claims,
  };
  if (tokens.main !== false) {
    next.accessToken = tokens.accessToken;
    next.tokenType = tokens.tokenType;
    next.accessTokenExpiresAt = tokens.accessTokenExpiresAt;
    next.scope = tokens.scope ?? record.scope;
    next.refreshedAt = now;
  } else {
    // Only resource tokens changed: the version still grows (the old refresh token is spent,
    // so an older record must not be written back), without shortening the access token's life.
    next.refreshedAt = tokenVersion(record) + 1;
  }
  if (tokens.resources) next.resourceTokens = { ...record.resourceTokens, ...tokens.resources };
  return next;
}

/** An outcome already in the record (e.g. a non-rotating provider's refresh token maps to the tokens it holds). */
function isApplied(record: SessionRecord, outcome: RefreshOutcome): boolean {
  if (outcome.accessToken !== record.accessToken) return false;
  if (outcome.refreshToken !== undefined && outcome.refreshToken !== record.refreshToken) return false;
  return Object.entries(outcome.resources ?? {}).every(([resource, token]) => record.resourceTokens?.[resource]?.accessToken === token.accessToken);
}

/** Whether the record holds everything wanted, none of it due. */
function isFresh(record: SessionRecord, want: RefreshWant, now: number, skewMs: number): boolean {
  if (want.main && isAccessTokenDue(record, now, skewMs)) return false;
  return want.resources.every((resource) => !isApiTokenDue(record.resourceTokens?.[resource], now, skewMs));
}

/** Whether a refresh obtained everything wanted. */
function covers(outcome: RefreshOutcome, want: RefreshWant): boolean {
  if (want.main && outcome.main === false) return false;
  return want.resources.every((resource) => outcome.resources?.[resource] !== undefined);
}

/** What one refresh obtains: what is wanted, and whatever else of the record is due (one chain instead of several). */
function planFor(record: SessionRecord, want: RefreshWant, now: number, skewMs: number): RefreshWant {
  const resources = new Set(want.resources);
  for (const [resource, token] of Object.entries(record.resourceTokens ?? {})) {
    if (isApiTokenDue(token, now, skewMs)) resources.add(resource);
  }
  return { main: want.main || isAccessTokenDue(record, now, skewMs), resources: [...resources] };
}

function withApi(err: ProviderError, api: string): ProviderError {
  return new ProviderError(err.kind, err.message, {
    api,
    cause: err,
    ...(err.oauthError !== undefined ? { oauthError: err.oauthError } : {}),
    ...(err.answer !== undefined ? { answer: err.answer } : {}),
    ...(err.retryAfterSeconds !== undefined ? { retryAfterSeconds: err.retryAfterSeconds } : {}),
    ...(err.configKeys !== undefined ? { configKeys: err.configKeys } : {}),
  });
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
