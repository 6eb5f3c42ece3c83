import type { OidcProvider } from '../oidc/provider.js';
import type { TokenSet } from '../oidc/token-set.js';
import { SingleFlight } from './single-flight.js';
import type { DpopKey } from '../oidc/dpop.js';

/**
 * A token younger than this that the upstream rejects is not replaced: the upstream would
 * most likely reject its successor too (it wants a user, another audience, …), and
 * fetching one per rejected request would let any caller make the provider issue tokens.
 */
export const CLIENT_TOKEN_MIN_AGE_FOR_REPLACEMENT_MS = 5000;

/**
 * Client-credentials tokens for `token: client` routes: one per distinct scope set,
 * cached until it is due (within the refresh skew), fetched single-flight.
 */
export class ClientTokens {
  private readonly cache = new Map<string, { tokens: TokenSet; obtainedAt: number }>();
  private readonly flights = new SingleFlight<TokenSet>();

  constructor(
    private readonly provider: Pick<OidcProvider, 'clientCredentials'>,
    private readonly refreshSkewMs: number,
    private readonly now: () => number,
    /** oidc.dpop: the key client-credentials tokens are bound to (the process or configured key). */
    readonly dpopKey?: DpopKey,
  ) {}

  async get(scopes: readonly string[]): Promise<TokenSet> {
    const key = scopes.join(' ');
    const cached = this.cache.get(key);
    if (cached && cached.tokens.accessTokenExpiresAt - this.refreshSkewMs > this.now()) return cached.tokens;
    const { value } = await this.flights.run(key, async () => {
      const tokens = await this.provider.clientCredentials(scopes, this.dpopKey);
      this.cache.set(key, { tokens, obtainedAt: this.now() });
      return tokens;
    });
    return value;
  }

  /**
   * After the upstream rejected `accessToken`: whether to try again with another token.
   * Yes when it has already been replaced (the replacement is used, nothing is fetched) or
   * when it is old enough to have gone stale (it is forgotten, so the next call fetches a
   * new one: at most once per token); no for a token obtained moments ago.
   */
  replaceRejected(scopes: readonly string[], accessToken: string): boolean {
    const key = scopes.join(' ');
    const cached = this.cache.get(key);
    if (cached?.tokens.accessToken !== accessToken) return true;
    if (this.now() - cached.obtainedAt < CLIENT_TOKEN_MIN_AGE_FOR_REPLACEMENT_MS) return false;
    this.cache.delete(key);
    return true;
  }
}
