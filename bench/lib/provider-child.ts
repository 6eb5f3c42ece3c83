/** The OpenID provider (test harness: a real oidc-provider) in a process of its own. */
import { startProvider, type TestProvider, type TestProviderOptions } from '../../test/support/provider.js';
import { serve } from './rpc.js';

let provider: TestProvider | undefined;

function started(): TestProvider {
  if (!provider) throw new Error('provider not started');
  return provider;
}

serve({
  async start(params: { redirectUris: string[]; accessTokenTtlSeconds: number; extraClaims?: Record<string, unknown>; resourceServers?: TestProviderOptions['resourceServers'] }) {
    provider = await startProvider({
      redirectUris: params.redirectUris,
      rotateRefreshToken: true,
      accessTokenTtlSeconds: params.accessTokenTtlSeconds,
      ...(params.extraClaims ? { extraClaims: params.extraClaims } : {}),
      ...(params.resourceServers ? { resourceServers: params.resourceServers } : {}),
    });
    return { issuer: provider.issuer, clients: provider.clients, endpoints: provider.endpoints };
  },
  /** Token-endpoint calls so far, by grant type and outcome (the benchmark diffs two snapshots). */
  tokenStats() {
    const stats: Record<string, number> = {};
    for (const record of started().tokenRequests) {
      const key = `${record.grantType}:${record.status === 200 ? 'ok' : (record.error ?? String(record.status))}`;
      stats[key] = (stats[key] ?? 0) + 1;
    }
    return { stats, serverErrors: started().serverErrors.length };
  },
  /** Registers (or replaces) a client, e.g. Apache's mod_auth_openidc in the production phase. */
  async addClient(params: { metadata: Record<string, unknown> }) {
    await started().addClient(params.metadata);
  },
  /** The harness keeps every request it answered; drop them so a long run does not grow. */
  trim() {
    started().requests.length = 0;
  },
  async stop() {
    await provider?.stop();
  },
});

// The request log grows by one entry per provider request; keep it bounded.
setInterval(() => {
  if (provider && provider.requests.length > 10_000) provider.requests.length = 0;
}, 1000).unref();
