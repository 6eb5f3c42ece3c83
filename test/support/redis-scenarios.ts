import { expect } from 'vitest';
import { startProvider, type TestProvider } from './provider.js';
import { startUpstream, type Upstream } from './upstream.js';
import { REDIRECT_URI, SECRET, startBff, TestBrowser, type TestBff } from './bff.js';
import { uniquePrefix } from './redis.js';

/**
 * The scenarios every production Redis topology runs (Sentinel, Cluster, TLS with ACL):
 * two token-handler replicas sharing the store, a refresh storm, and a failover (or an
 * outage) in the middle of load.
 */
export interface ReplicaPair {
  provider: TestProvider;
  upstream: Upstream;
  a: TestBff;
  b: TestBff;
  /** The replicas' clock: moving it on expires every access token at once. */
  time: { now: number };
  refreshGrants(): TestProvider['tokenRequests'];
  close(): Promise<void>;
}

/** A rotating provider, an introspecting API, and two replicas (store: redis) on `redis`, both ready. */
export async function startReplicaPair(redis: Record<string, unknown>): Promise<ReplicaPair> {
  const provider = await startProvider({ redirectUris: [REDIRECT_URI], rotateRefreshToken: true });
  const upstream = await startUpstream({
    introspectionEndpoint: `${provider.issuer}/token/introspection`,
    clientId: provider.clients.api.clientId,
    clientSecret: provider.clients.api.clientSecret,
  });
  const time = { now: Date.now() };
  const keyPrefix = uniquePrefix();
  const replicas: TestBff[] = [];
  for (let i = 0; i < 2; i++) {
    const bff = await startBff(
      {
        oidc: { issuer: provider.issuer, clientId: provider.clients.basic.clientId, clientSecret: provider.clients.basic.clientSecret },
        session: { store: 'redis', secrets: [SECRET], redis: { keyPrefix, ...redis } },
        routes: [{ prefix: '/api', upstream: upstream.url }],
      },
      { now: () => time.now },
    );
    replicas.push(bff);
    // Traffic reaches a replica once it is ready (its Redis connection is up).
    const deadline = Date.now() + 10_000;
    while ((await bff.app.inject('/readyz')).statusCode !== 200) {
      if (Date.now() > deadline) throw new Error('a replica never became ready');
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  const [a, b] = replicas as [TestBff, TestBff];
  return {
    provider,
    upstream,
    a,
    b,
    time,
    refreshGrants: () => provider.tokenRequests.filter((r) => r.grantType === 'refresh_token'),
    async close() {
      for (const replica of replicas) await replica.app.close();
      await upstream.close();
      await provider.stop();
    },
  };
}

/** /readyz names the topology (and the store is up), /metrics has its info gauge. */
export async function expectTopologyReported(pair: ReplicaPair, topology: 'single' | 'sentinel' | 'cluster'): Promise<void> {
  const ready = (await pair.a.app.inject('/readyz')).json();
  expect(ready.checks.session_store).toBe('ok');
  expect(ready.details.session_store.topology).toBe(topology);
  expect((await pair.a.app.metrics.exposition()).body).toContain(`token_handler_redis_info{topology="${topology}"} 1`);
}

/** 200 parallel calls of one session, spread over both replicas, with an expired access token: exactly one refresh grant. */
export async function refreshStorm(pair: ReplicaPair, login: string): Promise<void> {
  const browser = new TestBrowser(pair.a.app);
  await browser.login({ login });
  const cookie = browser.cookieHeader();
  const before = pair.refreshGrants().length;
  pair.time.now += 120_000;
  const responses = await Promise.all(
    Array.from({ length: 200 }, (_, i) => (i % 2 === 0 ? pair.a : pair.b).app.inject({ url: `/api/storm/${i}`, headers: { cookie, 'x-csrf': '1' } })),
  );
  expect(responses.map((r) => r.statusCode)).toEqual(Array(200).fill(200));
  const grants = pair.refreshGrants().slice(before);
  expect(grants.map((g) => g.status)).toEqual([200]);
  console.log(`[${login}] refresh storm: 200 calls over 2 replicas → ${grants.length} refresh grant, statuses all 200`);
}

export interface FailoverFigures {
  requests: number;
  ok: number;
  unavailable: number;
  /** Anything but 200 and 503 (must be 0: no 500, no 401 login_required). */
  other: Record<string, number>;
  sessionsLost: number;
  /** From the failover's start to the last 503 (0 when there was none), ms. */
  recoveryMs: number;
  refreshGrants: number;
  refusedRefreshGrants: number;
  /** The longest any request of the load took, ms (a 503 should come fast, not after a hang). */
  slowestMs: number;
  /** Times every access token expired during the load (each allows one refresh per session). */
  expiries: number;
}

/**
 * Sessions logged in well before the failover, then load (workers calling the API with
 * the sessions' cookies, alternating replicas); the access tokens expire as the failover
 * starts, so refreshes race it, and once more after it. Answers the figures; the test
 * asserts on them and prints them.
 */
export async function failoverUnderLoad(
  pair: ReplicaPair,
  label: string,
  failover: () => Promise<void>,
  options: { sessions?: number; workers?: number; settleMs?: number; untilReplicated?: () => Promise<void> } = {},
): Promise<FailoverFigures> {
  const sessionCount = options.sessions ?? 12;
  const cookies: string[] = [];
  for (let i = 0; i < sessionCount; i++) {
    const browser = new TestBrowser(i % 2 === 0 ? pair.a.app : pair.b.app);
    await browser.login({ login: `${label}-user-${i}` });
    cookies.push(browser.cookieHeader());
  }
  // Older than any replication delay: these sessions must all survive.
  await new Promise((resolve) => setTimeout(resolve, 300));
  const grantsBefore = pair.refreshGrants().length;
  const calls: Array<{ at: number; status: number; error?: string; ms: number }> = [];
  let running = true;
  let n = 0;
  const worker = async () => {
    while (running) {
      const i = n++;
      const app = (i % 2 === 0 ? pair.a : pair.b).app;
      const sent = Date.now();
      // A request that never ends is a failure too, counted rather than hanging the test.
      const response = await Promise.race([
        app.inject({ url: `/api/load/${i}`, headers: { cookie: cookies[i % sessionCount]!, 'x-csrf': '1' } }),
        new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), 15_000).unref()),
      ]);
      if (!response) calls.push({ at: Date.now(), ms: Date.now() - sent, status: 0, error: 'no answer within 15 s' });
      else calls.push({ at: Date.now(), ms: Date.now() - sent, status: response.statusCode, ...(response.statusCode !== 200 ? { error: String(response.json().error) } : {}) });
    }
  };
  const workers = Array.from({ length: options.workers ?? 6 }, worker);
  await new Promise((resolve) => setTimeout(resolve, 500));
  const startedAt = Date.now();
  pair.time.now += 120_000;
  await failover();
  const failedOverAt = Date.now();
  // Refresh locks need a replica's acknowledgement: until the new master has one in sync,
  // refreshes get 503. The tokens expire once more in that window, to measure it.
  if (options.untilReplicated) {
    pair.time.now += 120_000;
    await options.untilReplicated();
  }
  const replicatedAt = Date.now();
  // Load goes on until service is back and has stayed back a while, then the tokens expire once more.
  await new Promise((resolve) => setTimeout(resolve, options.settleMs ?? 1500));
  pair.time.now += 120_000;
  await new Promise((resolve) => setTimeout(resolve, 1000));
  running = false;
  await Promise.all(workers);

  // A session is lost when it needs a new login (401); one still getting 503 has not recovered yet (all asked again for up to 5 s).
  const lost: string[] = [];
  const deadline = Date.now() + 5000;
  for (const [i, cookie] of cookies.entries()) {
    for (;;) {
      const response = await (i % 2 === 0 ? pair.a : pair.b).app.inject({ url: '/api/after', headers: { cookie, 'x-csrf': '1' } });
      if (response.statusCode === 200) break;
      if (response.statusCode !== 503 || Date.now() > deadline) {
        lost.push(`${i}: ${response.statusCode} ${String(response.json().error)}`);
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
  const during = calls.filter((c) => c.at >= startedAt);
  const unavailable = calls.filter((c) => c.status === 503 && c.error === 'session_store_unavailable');
  const other: Record<string, number> = {};
  for (const c of calls.filter((c) => c.status !== 200 && !unavailable.includes(c))) other[`${c.status} ${c.error}`] = (other[`${c.status} ${c.error}`] ?? 0) + 1;
  const grants = pair.refreshGrants().slice(grantsBefore);
  const lastUnavailable = Math.max(startedAt, ...unavailable.map((c) => c.at));
  const figures: FailoverFigures = {
    requests: calls.length,
    ok: calls.filter((c) => c.status === 200).length,
    unavailable: unavailable.length,
    other,
    sessionsLost: lost.length,
    recoveryMs: lastUnavailable - startedAt,
    refreshGrants: grants.length,
    refusedRefreshGrants: grants.filter((g) => g.status !== 200).length,
    expiries: options.untilReplicated ? 3 : 2,
    slowestMs: Math.max(0, ...calls.map((c) => c.ms)),
  };
  console.log(
    `[${label}] failover under load: ${figures.requests} requests (${during.length} from the failover on; failover done after ${failedOverAt - startedAt} ms${options.untilReplicated ? `, new master with a replica in sync after ${replicatedAt - startedAt} ms` : ''}), ` +
      `${figures.ok} × 200, ${figures.unavailable} × 503 session_store_unavailable, other ${JSON.stringify(figures.other)}; ` +
      `recovery ${figures.recoveryMs} ms after the failover began; slowest request ${figures.slowestMs} ms; sessions lost ${figures.sessionsLost}/${sessionCount}${lost.length ? ` (${lost.join(', ')})` : ''}; ` +
      `refresh grants ${figures.refreshGrants} for ${sessionCount} sessions × ${figures.expiries} expiries, ${figures.refusedRefreshGrants} refused (reuse)`,
  );
  return figures;
}

/** What every topology must show after a failover under load. */
export function expectNothingLost(figures: FailoverFigures, sessions = 12): void {
  expect(figures.other).toEqual({});
  expect(figures.sessionsLost).toBe(0);
  expect(figures.refusedRefreshGrants).toBe(0);
  // One refresh per session per expiry, never a second one of the same refresh token.
  expect(figures.refreshGrants).toBeLessThanOrEqual(sessions * figures.expiries);
  expect(figures.ok).toBeGreaterThan(0);
}
