/**
 * Deterministic reproduction of what the soak saw on an overloaded machine (load average ~11 on
 * 2 cores): a refresh that token-handler gives up on (oidc.timeoutMs) while the provider is still
 * working on it. The provider completes it — the presented refresh token is consumed, its
 * successor goes to a closed connection — token-handler treats the timeout as transient and keeps
 * the session with the now spent refresh token, and its next refresh presents that token: reuse
 * detection revokes the whole grant, invalid_grant, the session is lost (401 login_required).
 *
 *   npx tsx soak/repro/refresh-timeout.ts     (≈ 5 s, 127.0.0.1 only, no Redis needed)
 *
 * "Slow while processing" is made with the provider's own storage: after a restart on the same
 * port with the same state, the store's RefreshToken `upsert` (saving the rotated token, which
 * oidc-provider does AFTER consuming the presented one) takes 1.5 s while `slow` is on, and
 * token-handler's oidc.timeoutMs is 1 s. (The harness's setLatency() delays a request before the
 * provider sees it; oidc-provider then drops the aborted request, so it cannot show this.)
 */
import type { Adapter } from 'oidc-provider';
import { buildApp } from '../../src/app.js';
import { parseConfig } from '../../src/config/load.js';
import { TestBrowser } from '../../test/support/bff.js';
import { MemoryStore, startProvider } from '../../test/support/provider.js';
import { startUpstream } from '../../test/support/upstream.js';

const PUBLIC_URL = 'https://app.example.test';
const hardStop = setTimeout(() => {
  console.error('repro: did not finish within 30 s');
  process.exit(1);
}, 30_000);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

let slow = false;
const first = await startProvider({ redirectUris: [`${PUBLIC_URL}/auth/callback`], accessTokenTtlSeconds: 2, rotateRefreshToken: true });
await first.stop();
// The same store, seen through an adapter whose RefreshToken upsert is slow while `slow` is on.
const store = first.state.store;
const slowStore = Object.create(store) as MemoryStore;
Object.defineProperty(slowStore, 'adapterFactory', {
  value: (model: string): Adapter => {
    const inner = store.adapterFactory(model);
    if (model !== 'RefreshToken') return inner;
    return {
      ...inner,
      async upsert(id, payload, expiresIn) {
        if (slow) await sleep(1500);
        return inner.upsert(id, payload, expiresIn);
      },
    };
  },
});
const provider = await startProvider({
  redirectUris: [`${PUBLIC_URL}/auth/callback`],
  accessTokenTtlSeconds: 2,
  rotateRefreshToken: true,
  port: first.port,
  state: { ...first.state, store: slowStore },
});
const upstream = await startUpstream({ introspectionEndpoint: provider.endpoints.introspection, clientId: provider.clients.api.clientId, clientSecret: provider.clients.api.clientSecret });
const logs: string[] = [];
const app = await buildApp(
  parseConfig({
    publicUrl: PUBLIC_URL,
    oidc: { issuer: provider.issuer, clientId: provider.clients.basic.clientId, clientSecret: provider.clients.basic.clientSecret, refreshSkewSeconds: 1, timeoutMs: 1000 },
    session: { store: 'memory', secrets: ['repro-secret-repro-secret-repro-secret-01'] },
    routes: [{ prefix: '/api', upstream: upstream.url }],
  }),
  { waitForProvider: true, logStream: { write: (line: string) => void logs.push(line) } },
);
await app.ready();

const browser = new TestBrowser(app);
await browser.login({ login: 'repro-user' });
const refreshes = () => provider.tokenRequests.filter((r) => r.grantType === 'refresh_token').map((r) => `${r.status}${r.error ? ` ${r.error}` : ''}`);
const step = async (label: string) => {
  const response = await browser.request('/api/x');
  console.log(`${label.padEnd(62)} → ${response.statusCode} ${response.statusCode === 200 ? '' : response.body}`);
  return response.statusCode;
};

console.log(`${'0. logged in, access token valid'.padEnd(62)} → ${(await browser.request('/api/x')).statusCode}`);
await sleep(1200); // the access token is due (2 s life, 1 s skew)
slow = true;
await step('1. token due; provider takes 1.5 s, oidc.timeoutMs is 1 s');
await sleep(1000); // the provider finishes that refresh: rotated token saved, answer to a closed socket
slow = false;
console.log(`   provider refresh_token grants so far: [${refreshes().join(', ')}]`);
const second = await step('2. provider fast again: next call refreshes');
await step('3. and the next');
console.log(`   provider refresh_token grants: [${refreshes().join(', ')}]`);
for (const line of logs.filter((l) => l.includes('"session ended"') || l.includes('refresh failed'))) {
  const l = JSON.parse(line) as { msg: string; err?: string; reason?: string };
  console.log(`   token-handler log: ${l.msg}${l.err ? ` — ${l.err}` : ''}${l.reason ? ` (reason ${l.reason})` : ''}`);
}
console.log(second === 401 ? '\nREPRODUCED: the session was lost after a refresh timeout the provider completed.' : '\nnot reproduced');

await app.close();
await upstream.close();
await provider.stop();
clearTimeout(hardStop);
process.exit(0);
