/**
 * Deterministic reproduction of the second way the saturated soak lost sessions: two
 * token-handler replicas sharing Redis send the SAME refresh token to the provider, because the
 * cross-replica refresh lock (`SET NX PX`, TTL oidc.timeoutMs + 1 s) expires while the replica
 * holding it is still working on a refresh that will succeed. The waiting replica sees the lock
 * gone and no result yet, takes the lock and refreshes with the token the holder already spent:
 * reuse detection revokes the grant, the session is lost (401 login_required).
 *
 *   npx tsx soak/repro/lock-expiry.ts     (≈ 10 s, 127.0.0.1 only, needs redis-server)
 *
 * "Still working" without any fault in token-handler: each step of the holder's refresh stays
 * within oidc.timeoutMs (3 s), but there are two of them — the token request (the provider
 * answers after 2 s) and, since the ID token's signature is verified, the first JWKS fetch of
 * that replica (answered after 2.5 s) — so the refresh takes ~4.5 s while the lock lives 4 s.
 * (In the soak it was a starved event loop that stretched the holder's work past the TTL.)
 */
import { Redis } from 'ioredis';
import { buildApp } from '../../src/app.js';
import { parseConfig } from '../../src/config/load.js';
import { TestBrowser } from '../../test/support/bff.js';
import { startProvider } from '../../test/support/provider.js';
import { redisServerInstalled, startRedisServer, uniquePrefix } from '../../test/support/redis.js';
import { startUpstream } from '../../test/support/upstream.js';

if (!redisServerInstalled()) {
  console.error('repro: needs redis-server (apt-get install redis-server)');
  process.exit(1);
}
const PUBLIC_URL = 'https://app.example.test';
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const redisServer = await startRedisServer();
// Whatever happens, the redis-server child is stopped before this process ends.
const hardStop = setTimeout(() => {
  console.error('repro: did not finish within 45 s');
  void Promise.race([redisServer.stop(), sleep(3000)]).finally(() => process.exit(1));
}, 45_000);
process.on('uncaughtException', (err) => {
  console.error(err);
  void Promise.race([redisServer.stop(), sleep(3000)]).finally(() => process.exit(1));
});
const provider = await startProvider({ redirectUris: [`${PUBLIC_URL}/auth/callback`], accessTokenTtlSeconds: 3, rotateRefreshToken: true });
const upstream = await startUpstream({ introspectionEndpoint: provider.endpoints.introspection, clientId: provider.clients.api.clientId, clientSecret: provider.clients.api.clientSecret });
const keyPrefix = uniquePrefix();
const logs: string[] = [];
const replica = async (name: string) => {
  const app = await buildApp(
    parseConfig({
      publicUrl: PUBLIC_URL,
      oidc: { issuer: provider.issuer, clientId: provider.clients.basic.clientId, clientSecret: provider.clients.basic.clientSecret, refreshSkewSeconds: 1, timeoutMs: 3000 },
      session: { store: 'redis', secrets: ['repro-secret-repro-secret-repro-secret-01'], redis: { url: redisServer.url, keyPrefix } },
      routes: [{ prefix: '/api', upstream: upstream.url }],
    }),
    { waitForProvider: true, logStream: { write: (line: string) => void logs.push(`${name} ${line}`) } },
  );
  await app.ready();
  return app;
};
const a = await replica('A');
const b = await replica('B');

const browser = new TestBrowser(b); // B has the JWKS cached from the login; A has not fetched it yet
await browser.login({ login: 'repro-user' });
const cookie = browser.cookieHeader();
const call = (app: typeof a) => app.inject({ method: 'GET', url: '/api/x', headers: { cookie, 'x-csrf': '1' } });
await sleep(2200); // the access token is due (3 s life, 1 s skew)

provider.setLatency('/token', 2000);
provider.setLatency('/jwks', 2500);
const watcher = new Redis(redisServer.url);
const started = Date.now();
const ms = () => `${String(Date.now() - started).padStart(5)} ms`;
const onA = call(a).then((r) => console.log(`${ms()}  A answered ${r.statusCode} ${r.statusCode === 200 ? '' : r.body}`));
let lock: string | undefined;
for (let i = 0; i < 300 && !lock; i++) {
  lock = (await watcher.keys(`${keyPrefix}refresh:lock:*`))[0];
  if (!lock) await sleep(5);
}
console.log(`${ms()}  A holds the refresh lock (TTL ${lock ? await watcher.pttl(lock) : '?'} ms); B gets a request of the same session and waits`);
const onB = call(b).then((r) => console.log(`${ms()}  B answered ${r.statusCode} ${r.statusCode === 200 ? '' : r.body}`));
let watching = true;
const lockWatch = (async () => {
  for (let last = ''; watching && Date.now() - started < 12_000; await sleep(20)) {
    const owner = lock ? await watcher.get(lock) : null;
    const now = owner === null ? 'free' : `held by ${owner.slice(0, 6)}…`;
    if (now !== last) console.log(`${ms()}    lock ${now}`);
    last = now;
  }
})();
await Promise.all([onA, onB]);
const refreshes = provider.tokenRequests
  .filter((r) => r.grantType === 'refresh_token')
  .map((r) => `${r.status}${r.error ? ` ${r.error} (${r.errorDescription})` : ''} at ${r.at - started} ms`);
console.log(`provider refresh_token grants: [${refreshes.join(', ')}]`);
for (const line of logs.filter((l) => l.includes('"session ended"') || l.includes('refresh failed'))) {
  const l = JSON.parse(line.slice(2)) as { msg: string; err?: string; reason?: string };
  console.log(`token-handler ${line[0]} log: ${l.msg}${l.err ? ` — ${l.err}` : ''}${l.reason ? ` (reason ${l.reason})` : ''}`);
}
provider.setLatency('/token', 0);
provider.setLatency('/jwks', 0);
const after = await call(a);
console.log(`afterwards, the session on A: ${after.statusCode} ${after.statusCode === 200 ? '' : after.body}`);
const reused = refreshes.some((r) => r.includes('invalid_grant'));
console.log(reused ? '\nREPRODUCED: two replicas spent one refresh token; the provider revoked the grant.' : '\nnot reproduced');

watching = false;
await lockWatch;
watcher.disconnect();
await a.close();
await b.close();
await upstream.close();
await provider.stop();
await redisServer.stop();
clearTimeout(hardStop);
process.exit(0);
