import { createHash } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Awaitable } from '../awaitable.js';
import { answerProviderFailure } from '../failures.js';
import { ProviderError } from '../oidc/errors.js';
import type { ExchangeRequest, OidcProvider } from '../oidc/provider.js';
import type { TokenSet } from '../oidc/token-set.js';
import type { Metrics } from '../ops/metrics.js';
import type { LoadedSession, SessionManager } from '../session/manager.js';
import { BoundedTtlCache } from '../state/bounded-cache.js';
import type { RefreshCoordinator } from '../state/ports.js';
import { isApiTokenDue, sessionHash, type ApiToken, type SessionRecord } from '../state/record.js';
import type { SessionTokens } from './session-tokens.js';
import type { DpopKey } from '../oidc/dpop.js';
import { SingleFlight } from './single-flight.js';

export interface ExchangeTokensOptions {
  provider: Pick<OidcProvider, 'exchange'>;
  sessions: SessionManager;
  sessionTokens: SessionTokens;
  /** With Redis: one exchange per (user token, audience) across replicas. */
  coordinator?: RefreshCoordinator;
  resultTtlMs: number;
  refreshSkewMs: number;
  now: () => number;
  retryAfterSeconds: number;
  metrics?: Metrics;
  /** oidc.dpop: the key a session's tokens are bound to; the exchanged token is bound to it too. */
  dpopKeyOf?: (record: SessionRecord) => DpopKey | undefined;
}

/** The key of an exchanged token in the session record: one per audience (and scope, resource). */
export function exchangeKey(request: ExchangeRequest): string {
  return [request.audience, request.scope ?? '', request.resource ?? ''].join(' ');
}

/** A hash of the user's access token: which token an exchanged one was made from. */
const subjectHashes = new WeakMap<SessionRecord, string>();
export function subjectHash(record: SessionRecord): string {
  let hash = subjectHashes.get(record);
  if (hash === undefined) {
    hash = createHash('sha256').update(record.accessToken).digest('base64url').slice(0, 22);
    subjectHashes.set(record, hash);
  }
  return hash;
}

export interface ExchangedToken {
  session: LoadedSession;
  token: ApiToken;
}

/**
 * `token: exchange` routes (RFC 8693): the user's access token exchanged for one with the
 * route's audience and scope, cached in the session per audience, exchanged again when it
 * is due or when the user's token changed (a refresh). Concurrent requests share one
 * exchange (in process; across replicas through the refresh coordinator, keyed by the user
 * token and the audience), and its result is remembered for requests still carrying the
 * cookie from before it.
 */
export class ExchangeTokens {
  private readonly flights = new SingleFlight<TokenSet>();
  private readonly results: BoundedTtlCache<TokenSet>;

  constructor(private readonly options: ExchangeTokensOptions) {
    this.results = new BoundedTtlCache(100_000, options.resultTtlMs, options.now);
  }

  /**
   * The exchanged token for this session and route. A value (no promise) when the session
   * holds a usable one made from its current user token: the usual proxied request.
   */
  tokenFor(request: FastifyRequest, reply: FastifyReply, loaded: LoadedSession, spec: ExchangeRequest, route: string): Awaitable<ExchangedToken> {
    const key = exchangeKey(spec);
    const cached = loaded.record.exchangedTokens?.[key];
    if (cached && cached.subject === subjectHash(loaded.record) && !isApiTokenDue(cached, this.options.now(), this.options.refreshSkewMs)) {
      return { session: loaded, token: cached };
    }
    return this.obtain(request, reply, loaded, spec, route);
  }

  /** After an upstream 401 for `rejected`: a new exchange (once per rejected token). */
  renew(request: FastifyRequest, reply: FastifyReply, loaded: LoadedSession, spec: ExchangeRequest, route: string, rejected: string): Promise<ExchangedToken> {
    return this.obtain(request, reply, loaded, spec, route, rejected);
  }

  private async obtain(request: FastifyRequest, reply: FastifyReply, loaded: LoadedSession, spec: ExchangeRequest, route: string, rejected?: string): Promise<ExchangedToken> {
    const key = exchangeKey(spec);
    let session = loaded;
    for (let attempt = 0; ; attempt++) {
      let tokens: TokenSet;
      try {
        tokens = await this.exchange(request, session.record, spec, key, route, rejected);
      } catch (err) {
        if (!(err instanceof ProviderError)) throw err;
        if (err.kind === 'invalid_grant' && attempt === 0) {
          // The provider refused the user's token as a subject (expired, revoked): refresh it
          // once (this answers like any refresh when that fails) and exchange the new one.
          request.log.info({ route, audience: spec.audience, session: sessionHash(session.record) }, "token exchange refused the user's access token; refreshing it once");
          session = await this.options.sessionTokens.refresh(request, reply, session, 'exchange_refused');
          continue;
        }
        const failure = new ProviderError(err.kind, err.message, { api: spec.audience, cause: err, ...(err.oauthError !== undefined ? { oauthError: err.oauthError } : {}), ...(err.retryAfterSeconds !== undefined ? { retryAfterSeconds: err.retryAfterSeconds } : {}), ...(err.answer !== undefined ? { answer: err.answer } : {}) });
        const answer = answerProviderFailure(failure, 'token exchange', request.log, this.options.retryAfterSeconds, { route, audience: spec.audience });
        if (err.kind === 'invalid_grant') await this.options.sessions.end(request, reply, session.record, 'invalid_grant');
        throw answer;
      }
      const token: ApiToken = {
        accessToken: tokens.accessToken,
        tokenType: tokens.tokenType,
        expiresAt: tokens.accessTokenExpiresAt,
        obtainedAt: Math.min(this.options.now(), tokens.accessTokenExpiresAt),
        subject: subjectHash(session.record),
      };
      const record: SessionRecord = { ...session.record, exchangedTokens: { ...session.record.exchangedTokens, [key]: token } };
      const saved = await this.options.sessions.save(request, reply, record, session);
      return { session: { record: saved, cookieValue: session.cookieValue }, token: saved.exchangedTokens?.[key] ?? token };
    }
  }

  /**
   * One exchange per (user token, route key, rejected token): joined in process, coordinated
   * across replicas, remembered for `resultTtlMs`.
   */
  private async exchange(request: FastifyRequest, record: SessionRecord, spec: ExchangeRequest, key: string, route: string, rejected?: string): Promise<TokenSet> {
    const { now, refreshSkewMs } = this.options;
    const usable = (tokens: TokenSet) => tokens.accessToken !== rejected && !isApiTokenDue({ ...tokens, expiresAt: tokens.accessTokenExpiresAt, obtainedAt: 0 }, now(), refreshSkewMs);
    let flightKey = createHash('sha256').update(`${record.accessToken}\n${key}\n${rejected ?? ''}`).digest('base64url');
    for (let hop = 0; hop < 2; hop++) {
      const remembered = this.results.get(flightKey);
      if (remembered && usable(remembered)) return remembered;
      const thisKey = flightKey;
      const { value } = await this.flights.run(thisKey, async () => {
        const call = () => this.call(request, record, spec, route);
        const { coordinator } = this.options;
        const tokens = coordinator ? await coordinator.coordinate(`exchange:${thisKey}`, call) : await call();
        this.results.set(thisKey, tokens);
        return tokens;
      });
      if (usable(value)) return value;
      // Another replica's result that is already due (or the very token an upstream refused): exchange again.
      flightKey = createHash('sha256').update(`${thisKey}\n${value.accessToken}`).digest('base64url');
    }
    throw new ProviderError('invalid_response', 'token exchange: the provider answered a token that is already expired');
  }

  private async call(request: FastifyRequest, record: SessionRecord, spec: ExchangeRequest, route: string): Promise<TokenSet> {
    const started = performance.now();
    try {
      const tokens = await this.options.provider.exchange(record.accessToken, spec, this.options.dpopKeyOf?.(record));
      this.options.metrics?.apiTokenGrant(route, 'exchange', 'success', (performance.now() - started) / 1000);
      request.log.info({ route, audience: spec.audience, session: sessionHash(record), outcome: 'success', durationMs: Math.round(performance.now() - started) }, 'token exchange');
      return tokens;
    } catch (err) {
      const outcome = err instanceof ProviderError ? err.kind : 'transient';
      this.options.metrics?.apiTokenGrant(route, 'exchange', outcome, (performance.now() - started) / 1000);
      request.log.info({ route, audience: spec.audience, session: sessionHash(record), outcome, durationMs: Math.round(performance.now() - started) }, 'token exchange');
      throw err;
    }
  }
}
