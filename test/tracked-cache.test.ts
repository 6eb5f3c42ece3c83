/**
 * The Redis local cache (client-side caching with CLIENT TRACKING) against a real
 * redis-server: a read that overlapped a change of its own key is not kept; a change of any
 * other key does not stop it from being kept — else a replica serving many sessions, each
 * sliding its idle timeout once a minute, would cache almost nothing.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { RedisTrackedCache } from '../src/state/redis/tracked-cache.js';
import { redisServerInstalled, startRedisServer, uniquePrefix, warnRedisSkipped, type RedisServer } from './support/redis.js';

const hasRedis = redisServerInstalled();
if (!hasRedis) warnRedisSkipped('test/tracked-cache.test.ts');

describe.runIf(hasRedis)('the Redis local cache', () => {
  let server: RedisServer;
  let redis: Redis;
  let admin: Redis;
  let cache: RedisTrackedCache;
  const prefix = uniquePrefix();

  beforeAll(async () => {
    server = await startRedisServer();
    redis = new Redis(server.url);
    admin = new Redis(server.url);
    cache = new RedisTrackedCache({ redis, maxEntries: 100, ttlMs: 30_000, logger: pino({ level: 'silent' }) });
    // Tracking is on once the cache keeps what it reads (it starts when both connections are ready).
    await admin.set(`${prefix}probe`, '1');
    for (const deadline = Date.now() + 5000; Date.now() < deadline; await new Promise((resolve) => setTimeout(resolve, 50))) {
      await cache.read(`${prefix}probe`, () => redis.get(`${prefix}probe`));
      if (await cached(`${prefix}probe`)) break;
    }
  });

  afterAll(async () => {
    cache.close();
    redis.disconnect();
    admin.disconnect();
    await server.stop();
  });

  /** A read whose answer is held until `release`, so a change can land while it runs. */
  function heldRead(key: string) {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const read = cache.read(key, async () => {
      const value = await redis.get(key);
      await gate;
      return value;
    });
    return { read: Promise.resolve(read), release };
  }

  /** Whether the next read of `key` is answered from memory. */
  async function cached(key: string): Promise<boolean> {
    let fetched = false;
    await cache.read(key, async () => {
      fetched = true;
      return redis.get(key);
    });
    return !fetched;
  }

  /** Another key this connection has read (so Redis tracks it), then changed by another client. */
  async function changeTrackedKey(key: string): Promise<void> {
    await admin.set(key, 'before');
    await cache.read(key, () => redis.get(key));
    await admin.set(key, 'after');
    // The invalidation travels on the cache's subscriber connection: give it a moment on loopback.
    await new Promise((resolve) => setTimeout(resolve, 100));
  }

  it("keeps a read during which another key changed", async () => {
    const key = `${prefix}session:a`;
    await admin.set(key, 'record a');
    const held = heldRead(key);
    await changeTrackedKey(`${prefix}session:other`);
    held.release();
    expect(await held.read).toBe('record a');
    expect(await cached(key)).toBe(true);
  });

  it('does not keep a read during which its own key changed', async () => {
    const key = `${prefix}session:b`;
    await admin.set(key, 'old record b');
    const held = heldRead(key);
    await new Promise((resolve) => setTimeout(resolve, 20));
    await admin.set(key, 'new record b');
    await new Promise((resolve) => setTimeout(resolve, 100));
    held.release();
    await held.read;
    expect(await cached(key)).toBe(false);
  });

  it('turns itself off while its invalidation connection does not answer, and back on once it does', async () => {
    const key = `${prefix}heartbeat`;
    await admin.set(key, 'v1');
    const beating = new RedisTrackedCache({ redis, maxEntries: 100, ttlMs: 30_000, heartbeatMs: 150, logger: pino({ level: 'silent' }) });
    let fetches = 0;
    const read = () => beating.read(key, () => {
      fetches++;
      return redis.get(key);
    });
    const answeredFromMemory = async () => {
      const before = fetches;
      await read();
      return fetches === before;
    };
    try {
      for (const deadline = Date.now() + 5000; Date.now() < deadline && !(await answeredFromMemory()); ) await new Promise((resolve) => setTimeout(resolve, 50));
      expect(await answeredFromMemory()).toBe(true);
      // Redis stops answering every client (as a partition would, without closing the connections).
      await admin.call('CLIENT', 'PAUSE', '1200', 'ALL');
      await new Promise((resolve) => setTimeout(resolve, 500));
      const before = fetches;
      void read();
      expect(fetches).toBe(before + 1);
      // Redis answers again: the heartbeat turns caching back on.
      let back = false;
      for (const deadline = Date.now() + 5000; Date.now() < deadline && !back; await new Promise((resolve) => setTimeout(resolve, 100))) back = await answeredFromMemory();
      expect(back).toBe(true);
    } finally {
      beating.close();
    }
  });
});
