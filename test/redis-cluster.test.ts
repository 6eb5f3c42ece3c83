import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Cluster } from 'ioredis';
import { redisServerInstalled, startRedisCluster, uniquePrefix, warnRedisSkipped, type RedisCluster } from './support/redis.js';
import { expectNothingLost, expectTopologyReported, failoverUnderLoad, refreshStorm, startReplicaPair, type ReplicaPair } from './support/redis-scenarios.js';
import { SECRET, startBff, TestBrowser } from './support/bff.js';

const SESSION = '__Host-th_session';

const hasRedis = redisServerInstalled();
if (!hasRedis) warnRedisSkipped('test/redis-cluster.test.ts');

describe.runIf(hasRedis)('Redis Cluster (three masters, three replicas)', () => {
  let cluster: RedisCluster;
  let pair: ReplicaPair;

  beforeAll(async () => {
    cluster = await startRedisCluster();
    pair = await startReplicaPair({ cluster: { nodes: cluster.nodes.slice(0, 2) } });
  }, 40_000);

  afterAll(async () => {
    await pair?.close();
    await cluster?.stop();
  });

  it('reports the topology in /readyz and /metrics, and says why the local cache is off', async () => {
    await expectTopologyReported(pair, 'cluster');
    expect(pair.a.logs.some((line) => String(line.msg).includes('local session cache is off'))).toBe(true);
  });

  it('stores sessions under hash-tagged keys spread over the masters; the login rate limit counts there; logout ends the session across slots', async () => {
    const browser = new TestBrowser(pair.a.app);
    await browser.login({ login: 'cluster-spread-user' });
    expect((await browser.request('/api/x')).statusCode).toBe(200);
    const admin = new Cluster(cluster.nodes.map((node) => ({ host: '127.0.0.1', port: Number(node.split(':')[1]) })));
    try {
      await new Promise((resolve) => admin.once('ready', resolve));
      const keys = (await Promise.all(admin.nodes('master').map((node) => node.keys('th-test:*')))).flat();
      expect(keys.some((key) => /:session:\{[^}]+\}$/.test(key))).toBe(true);
      expect(keys.some((key) => key.endsWith(':sub:{cluster-spread-user}'))).toBe(true);
      // The login rate limit counts in the cluster too (one key per script).
      expect(keys.some((key) => key.includes(':ratelimit:'))).toBe(true);
      expect((await browser.request('/auth/logout', { method: 'POST' })).statusCode).toBe(200);
      expect((await browser.request('/api/after-logout')).statusCode).toBe(401);
    } finally {
      admin.disconnect();
    }
  });

  it('store cookie: the denylist (three keys in three slots) refuses a cookie after logout', async () => {
    const { provider, upstream } = pair;
    const bff = await startBff({
      oidc: { issuer: provider.issuer, clientId: provider.clients.basic.clientId, clientSecret: provider.clients.basic.clientSecret },
      session: { store: 'cookie', secrets: [SECRET], redis: { cluster: { nodes: cluster.nodes }, keyPrefix: uniquePrefix() } },
      routes: [{ prefix: '/api', upstream: upstream.url }],
    });
    try {
      await expect.poll(async () => (await bff.app.inject('/readyz')).statusCode, { timeout: 10_000 }).toBe(200);
      const browser = new TestBrowser(bff.app);
      await browser.login({ login: 'cluster-cookie-user' });
      const captured = browser.cookies.get(SESSION)!;
      expect((await browser.request('/api/before')).statusCode).toBe(200);
      expect((await browser.request('/auth/logout', { method: 'POST' })).statusCode).toBe(200);
      const thief = new TestBrowser(bff.app);
      thief.cookies.set(SESSION, captured);
      expect((await thief.request('/api/after')).statusCode).toBe(401);
    } finally {
      await bff.app.close();
    }
  });

  it('two replicas, 200 parallel calls with an expired token: exactly one refresh', async () => {
    await refreshStorm(pair, 'cluster-storm');
  });

  it('CLUSTER FAILOVER of every shard in the middle of load: 503s or successes, no session lost, no second refresh, service back by itself', async () => {
    const before = await cluster.masters();
    const figures = await failoverUnderLoad(pair, 'cluster', async () => {
      await cluster.failover();
      await cluster.untilMastersChanged(before);
    });
    expectNothingLost(figures);
    expect(figures.recoveryMs).toBeLessThan(10_000);
    expect((await pair.a.app.metrics.exposition()).body).toMatch(/token_handler_redis_failovers_total [1-9]/);
  }, 40_000);
});
