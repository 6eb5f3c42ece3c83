import type { OidcProvider } from '../oidc/provider.js';
import type { TokenSet } from '../oidc/token-set.js';
import { SingleFlight } from './single-flight.js';

/**
 * Client-credentials tokens for `token: client` routes: one per distinct scope set,
 * cached until it is due (within the refresh skew), fetched single-flight.
 */
export class ClientTokens {
  private readonly cache = new Map<string, TokenSet>();
  private readonly flights = new SingleFlight<TokenSet>();

  constructor(
    private readonly provider: Pick<OidcProvider, 'clientCredentials'>,
    private readonly refreshSkewMs: number,
    private readonly now: () => number,
  ) {}

  async get(scopes: readonly string[]): Promise<TokenSet> {
    const key = scopes.join(' ');
    const cached = this.cache.get(key);
    if (cached && cached.accessTokenExpiresAt - this.refreshSkewMs > this.now()) return cached;
    const { value } = await this.flights.run(key, async () => {
      const tokens = await this.provider.clientCredentials(scopes);
      this.cache.set(key, tokens);
      return tokens;
    });
    return value;
  }

  /** Forgets a token the upstream rejected, so the next call fetches a new one. */
  invalidate(scopes: readonly string[], accessToken: string): void {
    const key = scopes.join(' ');
    if (this.cache.get(key)?.accessToken === accessToken) this.cache.delete(key);
  }
}
