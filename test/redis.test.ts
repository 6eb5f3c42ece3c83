import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { Redis } from 'ioredis';
import { startProvider, type TestProvider } from './support/provider.js';
import { startUpstream, type Upstream } from './support/upstream.js';
import { REDIRECT_URI, SECRET, startBff, TestBrowser, type TestBff } from './support/bff.js';
import { Sealer } from '../src/state/sealer.js';
import { KeyLayout } from '../src/state/redis/keys.js';
import { RedisSessionStore } from '../src/state/redis/session-store.js';
import { refreshTokenKey } from '../src/tokens/refresher.js';
import { redisServerInstalled, startRedisServer, uniquePrefix, warnRedisSkipped, type RedisServer } from './support/redis.js';
import type { SessionRecord } from '../src/state/record.js';

const SESSION = '__Host-th_session';
const hasRedis = redisServerInstalled();
if (!hasRedis) warnRedisSkipped('test/redis.test.ts');

/** The upstream API, checking every token by introspection at this provider. */
function upstreamFor(provider: TestProvider): Promise<Upstream> {
  return startUpstream({
    introspectionEndpoint: `${provider.issuer}/token/introspection`,
    clientId: provider.clients.api.clientId,
    clientSecret: provider.clients.api.clientSecret,
  });
}

/** A replica's configuration: this provider and upstream, this store, sessions in this Redis. */
function replicaConfig(
  provider: TestProvider,
  upstream: Upstream,
  store: 'redis' | 'cookie' | 'memory',
  redis: { url: string; keyPrefix: string; localCacheEntries?: number },
  oidc: { timeoutMs?: number } = {},
): Record<string, unknown> {
  return {
    oidc: { issuer: provider.issuer, clientId: provider.clients.basic.clientId, clientSecret: provider.clients.basic.clientSecret, ...oidc },
    session: { store, secrets: [SECRET], redis },
    routes: [{ prefix: '/api', upstream: upstream.url }],
  };
}

describe.runIf(hasRedis)('sessions and refresh coordination on Redis', () => {
  let redisServer: RedisServer;
  let provider: TestProvider;
  let upstream: Upstream;
  const started: TestBff[] = [];
  const time = { now: Date.now() };

  beforeAll(async () => {
    redisServer = await startRedisServer();
    provider = await startProvider({ redirectUris: [REDIRECT_URI], rotateRefreshToken: true });
    upstream = await upstreamFor(provider);
  });

  afterAll(async () => {
    for (const bff of started) await bff.app.close();
    await upstream?.close();
    await provider?.stop();
    await redisServer?.stop();
  });

  async function replica(store: 'redis' | 'cookie', keyPrefix: string): Promise<TestBff> {
    const instance = await startBff(replicaConfig(provider, upstream, store, { url: redisServer.url, keyPrefix }), { now: () => time.now });
    started.push(instance);
    return instance;
  }

  const refreshGrants = () => provider.tokenRequests.filter((r) => r.grantType === 'refresh_token');

  it('keeps only a sealed session id in the cookie and no token in clear in Redis', async () => {
    const prefix = uniquePrefix();
    const { app } = await replica('redis', prefix);
    const browser = new TestBrowser(app);
    await browser.login({ login: 'dump-user' });
    expect(browser.cookies.get(SESSION)!.length).toBeLessThan(300);
    expect((await browser.request('/api/x')).statusCode).toBe(200);

    const dump = await redisServer.dump(prefix);
    expect(dump.some((entry) => entry.key.startsWith(`${prefix}session:`))).toBe(true);
    expect(dump.some((entry) => entry.key === `${prefix}sub:dump-user`)).toBe(true);
    const everything = dump.map((entry) => `${entry.key} ${entry.value}`).join('\n');
    const tokens = provider.issuedTokens();
    expect(tokens.length).toBeGreaterThan(0);
    for (const token of tokens) expect(everything).not.toContain(token);
  });

  it('sets the record TTL to the idle timeout', async () => {
    const prefix = uniquePrefix();
    const { app } = await replica('redis', prefix);
    await new TestBrowser(app).login();
    const redis = new Redis(redisServer.url);
    try {
      const [key] = await redis.keys(`${prefix}session:*`);
      const ttl = await redis.pttl(key!);
      expect(ttl).toBeGreaterThan(1790_000);
      expect(ttl).toBeLessThanOrEqual(1800_000);
    } finally {
      redis.disconnect();
    }
  });

  it.each(['redis', 'cookie'] as const)(
    'store %s: 200 parallel calls across two replicas with an expired token cause exactly one refresh',
    async (store) => {
      const prefix = uniquePrefix();
      const a = await replica(store, prefix);
      const b = await replica(store, prefix);
      const browser = new TestBrowser(a.app);
      await browser.login({ login: `storm-${store}` });
      const cookie = browser.cookieHeader();
      const before = refreshGrants().length;
      time.now += 120_000;

      const calls = Array.from({ length: 200 }, (_, i) =>
        (i % 2 === 0 ? a : b).app.inject({ method: 'GET', url: `/api/storm/${i}`, headers: { cookie, 'x-csrf': '1' } }),
      );
      const responses = await Promise.all(calls);
      expect(responses.map((r) => r.statusCode)).toEqual(Array(200).fill(200));
      expect(refreshGrants().length - before).toBe(1);
      expect(refreshGrants().slice(before).every((r) => r.status === 200)).toBe(true);

      // The session is still valid afterwards, on both replicas, through the next refresh too.
      const next = new TestBrowser(b.app);
      for (const r of responses.slice(0, 1)) next.store(r);
      if (store === 'redis') next.cookies.set(SESSION, browser.cookies.get(SESSION)!);
      expect((await next.request('/api/after')).statusCode).toBe(200);
      time.now += 120_000;
      expect((await next.request('/api/after-next-expiry')).statusCode).toBe(200);
      expect(refreshGrants().length - before).toBe(2);
    },
  );

  it('waits out the lock of a replica that died while refreshing, then refreshes', async () => {
    const prefix = uniquePrefix();
    const { app } = await replica('redis', prefix);
    const browser = new TestBrowser(app);
    await browser.login({ login: 'orphan-lock-user' });
    const redis = new Redis(redisServer.url);
    try {
      // The refresh token is sealed in Redis; the test knows the secret, a dead replica held its lock.
      const [key] = await redis.keys(`${prefix}session:*`);
      const record = await new Sealer([SECRET]).unseal<SessionRecord>((await redis.hget(key!, 'd'))!);
      await redis.set(`${prefix}refresh:lock:${refreshTokenKey(record!.refreshToken!)}`, 'dead-replica', 'PX', 1500);
      time.now += 120_000;
      const before = refreshGrants().length;
      const started = Date.now();
      const response = await browser.request('/api/x');
      expect(response.statusCode).toBe(200);
      expect(Date.now() - started).toBeGreaterThanOrEqual(1000);
      expect(Date.now() - started).toBeLessThan(5000);
      expect(refreshGrants().length - before).toBe(1);
    } finally {
      redis.disconnect();
    }
  });

  it('ends the record and its index entries on logout', async () => {
    const prefix = uniquePrefix();
    const { app } = await replica('redis', prefix);
    const browser = new TestBrowser(app);
    await browser.login({ login: 'logout-user' });
    expect((await redisServer.dump(prefix)).some((e) => e.key.startsWith(`${prefix}session:`))).toBe(true);
    const captured = browser.cookies.get(SESSION)!;
    expect((await browser.request('/auth/logout', { method: 'POST' })).statusCode).toBe(200);
    const dump = await redisServer.dump(prefix);
    expect(dump.filter((e) => e.key.startsWith(`${prefix}session:`))).toEqual([]);
    expect(dump.filter((e) => e.key.startsWith(`${prefix}sub:`)).every((e) => e.value === '[]')).toBe(true);
    // A cookie captured before logout no longer opens anything.
    const thief = new TestBrowser(app);
    thief.cookies.set(SESSION, captured);
    expect((await thief.request('/api/x')).statusCode).toBe(401);
  });

  it('rewrites the back-channel index only when a session names another provider session, not on every idle-timeout slide', async () => {
    const prefix = uniquePrefix();
    const redis = new Redis(redisServer.url);
    const store = new RedisSessionStore({ redis, keys: new KeyLayout(prefix, false), sealer: new Sealer([SECRET]), absoluteTimeoutSeconds: 3600 });
    const indexWrites = async () => Number(/cmdstat_sadd:calls=(\d+)/.exec(await redis.info('commandstats'))?.[1] ?? 0);
    try {
      const record = { id: 'slide-1', accessToken: 'a', createdAt: Date.now(), lastSeenAt: Date.now(), claims: { sub: 'jane', sid: 'op-1' } } as unknown as SessionRecord;
      await store.create(record, 600);
      const afterCreate = await indexWrites();
      expect(await store.update({ ...record, lastSeenAt: Date.now() + 60_000 }, 600)).toBe('written');
      expect(await indexWrites()).toBe(afterCreate);
      expect(await store.update({ ...record, claims: { sub: 'jane', sid: 'op-2' } }, 600)).toBe('written');
      expect(await store.findBySid('op-2')).toEqual(['slide-1']);
      expect(await store.findBySub('jane')).toEqual(['slide-1']);
    } finally {
      redis.disconnect();
    }
  });

  it('slides a session\'s idle timeout without sealing or rewriting its record: its last use and TTL move, the sealed record stays', async () => {
    const prefix = uniquePrefix();
    const redis = new Redis(redisServer.url);
    const sealer = new Sealer([SECRET]);
    const store = new RedisSessionStore({ redis, keys: new KeyLayout(prefix, false), sealer, absoluteTimeoutSeconds: 3600 });
    const other = new RedisSessionStore({ redis, keys: new KeyLayout(prefix, false), sealer: new Sealer([SECRET]), absoluteTimeoutSeconds: 3600 });
    const key = `${prefix}session:slide-2`;
    try {
      const t0 = Date.now();
      const record = { id: 'slide-2', accessToken: 'a', createdAt: t0, lastSeenAt: t0, claims: { sub: 'jane' } } as unknown as SessionRecord;
      await store.create(record, 60);
      const sealedBefore = await redis.hget(key, 'd');
      const sealed = vi.spyOn(sealer, 'seal');
      expect(await store.slide('slide-2', t0 + 60_000, 900)).toBe('written');
      expect(sealed).not.toHaveBeenCalled();
      expect(await redis.hget(key, 'd')).toBe(sealedBefore);
      expect(await redis.pttl(key)).toBeGreaterThan(890_000);
      // Another replica reads the slide.
      expect((await other.get('slide-2'))?.lastSeenAt).toBe(t0 + 60_000);
      // A slide that arrives late (an older last use) moves nothing back.
      expect(await store.slide('slide-2', t0 + 30_000, 600)).toBe('written');
      expect((await other.get('slide-2'))?.lastSeenAt).toBe(t0 + 60_000);
      expect(await redis.pttl(key)).toBeGreaterThan(800_000);
      // A refresh written afterwards with an older last use keeps the slide's.
      await other.update({ ...record, accessToken: 'b' }, 900);
      expect(await other.get('slide-2')).toMatchObject({ accessToken: 'b', lastSeenAt: t0 + 60_000 });
    } finally {
      redis.disconnect();
    }
  });

  it('refuses to slide a session that ended, and does not bring its key back', async () => {
    const prefix = uniquePrefix();
    const redis = new Redis(redisServer.url);
    const store = new RedisSessionStore({ redis, keys: new KeyLayout(prefix, false), sealer: new Sealer([SECRET]), absoluteTimeoutSeconds: 3600 });
    try {
      const record = { id: 'slide-3', accessToken: 'a', createdAt: Date.now(), lastSeenAt: Date.now(), claims: { sub: 'jane' } } as unknown as SessionRecord;
      await store.create(record, 600);
      await store.delete('slide-3');
      expect(await store.slide('slide-3', Date.now() + 60_000, 600)).toBe('ended');
      expect(await redis.exists(`${prefix}session:slide-3`)).toBe(0);
    } finally {
      redis.disconnect();
    }
  });

  it('a session used through one replica stays alive on another past the idle timeout counted from its login', async () => {
    // Tokens outlive the test, so no refresh rewrites the record: only the slide says the session was used.
    const longTokens = await startProvider({ redirectUris: [REDIRECT_URI], accessTokenTtlSeconds: 7200 });
    const itsUpstream = await upstreamFor(longTokens);
    const prefix = uniquePrefix();
    const replicaOf = async () => {
      const bff = await startBff(replicaConfig(longTokens, itsUpstream, 'redis', { url: redisServer.url, keyPrefix: prefix }), { now: () => time.now });
      started.push(bff);
      return bff;
    };
    const a = await replicaOf();
    const b = await replicaOf();
    const browser = new TestBrowser(a.app);
    await browser.login({ login: 'slide-across' });
    const cookie = browser.cookieHeader();
    const call = (bff: TestBff, path: string) => bff.app.inject({ method: 'GET', url: path, headers: { cookie, 'x-csrf': '1' } });
    // Replica b holds the session in its local cache from here on.
    expect((await call(b, '/api/first')).statusCode).toBe(200);
    time.now += 20 * 60_000;
    expect((await call(a, '/api/used-on-a')).statusCode).toBe(200);
    // 40 minutes after the login, 20 after the last use: within the 30-minute idle timeout only thanks to the slide.
    time.now += 20 * 60_000;
    try {
      expect((await call(b, '/api/on-b')).statusCode).toBe(200);
    } finally {
      await itsUpstream.close();
      await longTokens.stop();
    }
  });

  it('reads a session back without decrypting it again while its seal in Redis is the one this replica last read or wrote', async () => {
    const prefix = uniquePrefix();
    const redis = new Redis(redisServer.url);
    const sealer = new Sealer([SECRET]);
    const store = new RedisSessionStore({ redis, keys: new KeyLayout(prefix, false), sealer, absoluteTimeoutSeconds: 3600, verifiedEntries: 10 });
    const other = new RedisSessionStore({ redis, keys: new KeyLayout(prefix, false), sealer: new Sealer([SECRET]), absoluteTimeoutSeconds: 3600 });
    const unsealed = vi.spyOn(sealer, 'unseal');
    try {
      const record = { id: 'opened-1', accessToken: 'a', createdAt: Date.now(), lastSeenAt: Date.now(), claims: { sub: 'jane' } } as unknown as SessionRecord;
      await store.create(record, 600);
      expect(await store.get('opened-1')).toBe(record);
      const slid = { ...record, lastSeenAt: Date.now() + 60_000 };
      await store.update(slid, 600);
      expect(await store.get('opened-1')).toBe(slid);
      expect(unsealed).not.toHaveBeenCalled();
      // Another replica's write is a new seal: decrypted, and its content is what is answered.
      const refreshed = { ...slid, accessToken: 'b', v: 2 } as unknown as SessionRecord;
      await other.update(refreshed, 600);
      expect((await store.get('opened-1'))?.accessToken).toBe('b');
      expect(unsealed).toHaveBeenCalledTimes(1);
    } finally {
      redis.disconnect();
    }
  });

  it('answers 503 session_store_unavailable while Redis is down and recovers, keeping the sessions Redis kept', async () => {
    const prefix = uniquePrefix();
    const { app } = await replica('redis', prefix);
    const browser = new TestBrowser(app);
    await browser.login({ login: 'outage-user' });
    expect((await browser.request('/api/before')).statusCode).toBe(200);

    await redisServer.stop();
    try {
      // The replica learns that Redis is gone when its connection closes (a moment after the
      // process exits); until then its local cache may still answer, as it would have a
      // moment earlier. Readiness failing is the sign the connection is known to be down.
      await expect.poll(async () => (await app.inject('/readyz')).statusCode, { timeout: 5000, interval: 20 }).toBe(503);
      const readiness = await app.inject('/readyz');
      expect(readiness.json().checks.session_store).toBe('failing');
      const during = await browser.request('/api/during');
      expect(during.statusCode).toBe(503);
      expect(during.json().error).toBe('session_store_unavailable');
      expect(browser.cookies.get(SESSION)).toBeDefined();
    } finally {
      await redisServer.start();
    }
    await expect.poll(async () => (await app.inject('/readyz')).statusCode, { timeout: 10_000, interval: 100 }).toBe(200);
    expect((await browser.request('/api/after')).statusCode).toBe(200);
  });

  // The same Redis, provider and upstream; replicas on the real clock.
  describe('the local session cache of each replica (Redis client tracking)', () => {
    let admin: Redis;

    beforeAll(() => {
      admin = new Redis(redisServer.url);
    });

    afterAll(() => {
      admin?.disconnect();
    });

    async function replica(keyPrefix: string, url = redisServer.url, localCacheEntries?: number, store: 'redis' | 'cookie' | 'memory' = 'redis'): Promise<TestBff> {
      return startBff(replicaConfig(provider, upstream, store, { url, keyPrefix, ...(localCacheEntries === undefined ? {} : { localCacheEntries }) }));
    }

    /** Session reads Redis has answered so far (the store reads a record with one HMGET: the sealed record and its last slide; the cookie store's denylist check is one MGET). */
    async function sessionReads(server: Redis = admin, command: 'hmget' | 'mget' = 'hmget'): Promise<number> {
      return Number(new RegExp(`cmdstat_${command}:calls=(\\d+)`).exec(await server.info('commandstats'))?.[1] ?? 0);
    }

    /** Requests until one is answered without reading Redis: the replica's cache holds the session. */
    async function warm(browser: TestBrowser, command: 'hmget' | 'mget' = 'hmget'): Promise<void> {
      await expect
        .poll(
          async () => {
            const before = await sessionReads(admin, command);
            expect((await browser.request('/api/warm')).statusCode).toBe(200);
            return (await sessionReads(admin, command)) - before;
          },
          { timeout: 5000, interval: 50 },
        )
        .toBe(0);
    }

    /**
     * Two replicas sharing Redis (and a key prefix): a browser signed in on A, and the same
     * session on B, whose cache holds it.
     */
    async function sessionOnTwoReplicas(login: string, store: 'redis' | 'cookie' = 'redis'): Promise<{ onA: TestBrowser; onB: TestBrowser }> {
      const prefix = uniquePrefix();
      const a = await replica(prefix, redisServer.url, undefined, store);
      const b = await replica(prefix, redisServer.url, undefined, store);
      const onA = new TestBrowser(a.app);
      await onA.login({ login });
      const onB = new TestBrowser(b.app);
      onB.cookies.set(SESSION, onA.cookies.get(SESSION)!);
      // The redis store reads a record with HGET; the cookie store's denylist check is one MGET.
      await warm(onB, store === 'cookie' ? 'mget' : 'hmget');
      return { onA, onB };
    }

    /**
     * The session is refused by the replica itself (401 login_required), not by the API: the
     * upstream never sees the call, so the cached record really was dropped.
     */
    async function expectEndedOn(browser: TestBrowser, path: string): Promise<void> {
      // Redis's invalidation message travels on the replica's second connection: on loopback
      // it takes well under a millisecond; 200 ms is plenty.
      await new Promise((resolve) => setTimeout(resolve, 200));
      const response = await browser.request(`/api/${path}`);
      expect(response.statusCode).toBe(401);
      expect(response.json().error).toBe('login_required');
      expect(upstream.requests.filter((r) => r.url.includes(path))).toEqual([]);
    }

    it('answers a busy session from memory: twenty API calls, not one Redis read', async () => {
      const { app } = await replica(uniquePrefix());
      const browser = new TestBrowser(app);
      await browser.login({ login: 'busy-user' });
      await warm(browser);
      const before = await sessionReads();
      for (let i = 0; i < 20; i++) expect((await browser.request(`/api/busy/${i}`)).statusCode).toBe(200);
      expect((await sessionReads()) - before).toBe(0);
    });

    it('a logout on one replica ends the session that another replica holds in its cache, at once', async () => {
      const { onA, onB } = await sessionOnTwoReplicas('two-replica-user');

      expect((await onA.request('/auth/logout', { method: 'POST' })).statusCode).toBe(200);
      await expectEndedOn(onB, 'after-logout');
    });

    it('keeps receiving invalidations after its subscriber connection is killed and comes back', async () => {
      const { onA, onB } = await sessionOnTwoReplicas('killed-subscriber-user');

      // Every subscribed connection (the caches' invalidation listeners) is cut.
      expect(Number(await admin.client('KILL', 'TYPE', 'pubsub'))).toBeGreaterThanOrEqual(2);
      expect((await onB.request('/api/meanwhile')).statusCode).toBe(200);
      await warm(onB);

      expect((await onA.request('/auth/logout', { method: 'POST' })).statusCode).toBe(200);
      await expectEndedOn(onB, 'after-reconnect-logout');
    });

    it('store cookie with Redis: a busy session is checked against the shared denylist from memory, and a logout on another replica refuses its cookie at once', async () => {
      const { onA, onB } = await sessionOnTwoReplicas('cookie-denylist-user', 'cookie');
      const before = await sessionReads(admin, 'mget');
      for (let i = 0; i < 10; i++) expect((await onB.request(`/api/checked/${i}`)).statusCode).toBe(200);
      expect((await sessionReads(admin, 'mget')) - before).toBe(0);

      expect((await onA.request('/auth/logout', { method: 'POST' })).statusCode).toBe(200);
      await expectEndedOn(onB, 'after-cookie-logout');
    });

    it('store memory with Redis configured (refresh coordination only) opens no cache connection', async () => {
      const subscribers = async () => String(await admin.call('CLIENT', 'LIST', 'TYPE', 'pubsub')).split('\n').filter(Boolean).length;
      const before = await subscribers();
      const { app } = await replica(uniquePrefix(), redisServer.url, undefined, 'memory');
      await new TestBrowser(app).login({ login: 'memory-with-redis-user' });
      expect(await subscribers()).toBe(before);
    });

    it('with localCacheEntries 0 every API call reads Redis', async () => {
      const { app } = await replica(uniquePrefix(), redisServer.url, 0);
      const browser = new TestBrowser(app);
      await browser.login({ login: 'uncached-user' });
      const before = await sessionReads();
      for (let i = 0; i < 5; i++) expect((await browser.request(`/api/uncached/${i}`)).statusCode).toBe(200);
      expect((await sessionReads()) - before).toBe(5);
    });

    it('on a Redis that refuses CLIENT TRACKING, warns once and serves every call from Redis', async () => {
      const noClient = await startRedisServer(['--rename-command', 'CLIENT', '']);
      const direct = new Redis(noClient.url);
      try {
        const bff = await replica(uniquePrefix(), noClient.url);
        const browser = new TestBrowser(bff.app);
        await browser.login({ login: 'no-tracking-user' });
        const before = await sessionReads(direct);
        for (let i = 0; i < 5; i++) expect((await browser.request(`/api/plain/${i}`)).statusCode).toBe(200);
        expect((await sessionReads(direct)) - before).toBe(5);
        const warnings = bff.logs.filter((line) => String(line.msg).includes('CLIENT TRACKING'));
        expect(warnings).toHaveLength(1);
        expect(warnings[0]!.level).toBe(40);
        await bff.app.close();
      } finally {
        direct.disconnect();
        await noClient.stop();
      }
    });
  });
});

describe.runIf(hasRedis)('a refresh slower than the lock expiry', () => {
  it('keeps the lock alive while it runs, so another replica never spends the same refresh token', async () => {
    const redisServer = await startRedisServer();
    const provider = await startProvider({ redirectUris: [REDIRECT_URI], rotateRefreshToken: true });
    const upstream = await upstreamFor(provider);
    const time = { now: Date.now() };
    const keyPrefix = uniquePrefix();
    const replicas: TestBff[] = [];
    try {
      for (let i = 0; i < 2; i++) {
        replicas.push(
          // timeoutMs 1000 → the lock lives 5 s unless its holder extends it.
          await startBff(replicaConfig(provider, upstream, 'redis', { url: redisServer.url, keyPrefix }, { timeoutMs: 1000 }), { now: () => time.now }),
        );
      }
      const [a, b] = replicas as [TestBff, TestBff];
      const browser = new TestBrowser(a.app);
      await browser.login({ login: 'slow-lock-user' });
      const cookie = browser.cookieHeader();
      time.now += 120_000;
      // Injected: the real provider cannot be slow; 6 s of latency in front of its token endpoint.
      provider.setLatency('/token', 6000);
      const startedAt = Date.now();
      expect((await a.app.inject({ url: '/api/first', headers: { cookie, 'x-csrf': '1' } })).statusCode).toBe(503);
      // A's refresh reaches the provider only at 6 s. Past the lock's own 5 s expiry, with the
      // provider fast again, replica B sees the same expired session: it must wait for A's
      // refresh, not send the same refresh token itself.
      await new Promise((resolve) => setTimeout(resolve, 4500 - (Date.now() - startedAt)));
      provider.setLatency('/token', 0);
      await new Promise((resolve) => setTimeout(resolve, 5500 - (Date.now() - startedAt)));
      expect([200, 503]).toContain((await b.app.inject({ url: '/api/second', headers: { cookie, 'x-csrf': '1' } })).statusCode);
      await expect.poll(() => provider.tokenRequests.filter((r) => r.grantType === 'refresh_token').length, { timeout: 5000 }).toBeGreaterThanOrEqual(1);
      await new Promise((resolve) => setTimeout(resolve, 7000 - (Date.now() - startedAt)));
      for (const replica of [a, b]) {
        expect((await replica.app.inject({ url: '/api/after', headers: { cookie, 'x-csrf': '1' } })).statusCode).toBe(200);
      }
      const refreshes = provider.tokenRequests.filter((r) => r.grantType === 'refresh_token');
      expect(refreshes.map((r) => r.status)).toEqual([200]);
    } finally {
      for (const replica of replicas) await replica.app.close();
      await upstream.close();
      await provider.stop();
      await redisServer.stop();
    }
  }, 30_000);
});
