import type { Redis } from 'ioredis';
import type { SessionRecord } from './record.js';
import type { Sealer } from './sealer.js';
import type { SessionStore } from './store.js';
import type { RedisTrackedCache } from './redis-tracked-cache.js';
import type { Awaitable } from '../awaitable.js';
import { storeCall } from './redis-client.js';
import { tokenVersion } from './memory-store.js';

/**
 * Writes the record unless the stored one is newer (a request that loaded the session
 * before a refresh must not write spent tokens back). One key, so Redis Cluster is fine.
 */
const SET_IF_NOT_OLDER = `
local current = redis.call('HGET', KEYS[1], 'v')
if current and tonumber(current) > tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'd', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
`;

export interface RedisSessionStoreOptions {
  redis: Redis;
  keyPrefix: string;
  sealer: Sealer;
  /** Index entries live as long as a session may. */
  absoluteTimeoutSeconds: number;
  /**
   * Records kept in this process, invalidated by Redis on any change (see
   * redis-tracked-cache.ts), so a busy session's requests do not each wait for Redis.
   */
  localCache?: RedisTrackedCache;
}

/**
 * Sessions in Redis. Each record is sealed with the session secrets, so a dump of Redis
 * reveals no token. TTL = idle timeout (sliding, set on every write, never past the
 * absolute end: the caller computes it). Sets of session ids by provider `sid` and by
 * `sub` serve back-channel logout.
 */
export class RedisSessionStore implements SessionStore {
  constructor(private readonly options: RedisSessionStoreOptions) {}

  private key(kind: 'session' | 'sid' | 'sub', id: string): string {
    return `${this.options.keyPrefix}${kind}:${id}`;
  }

  /** Synchronous when the record is in the local cache. */
  get(id: string): Awaitable<SessionRecord | null> {
    const key = this.key('session', id);
    const { localCache } = this.options;
    return localCache ? localCache.read(key, () => this.fetch(key)) : this.fetch(key);
  }

  private async fetch(key: string): Promise<SessionRecord | null> {
    const sealed = await storeCall('get', () => this.options.redis.hget(key, 'd'));
    if (sealed === null) return null;
    return this.options.sealer.unseal<SessionRecord>(sealed, this.options.absoluteTimeoutSeconds);
  }

  async set(record: SessionRecord, ttlSeconds: number): Promise<void> {
    const { redis, sealer, absoluteTimeoutSeconds, localCache } = this.options;
    const key = this.key('session', record.id);
    const sealed = await sealer.seal(record, absoluteTimeoutSeconds);
    await storeCall('set', async () => {
      const write = () => redis.eval(SET_IF_NOT_OLDER, 1, key, tokenVersion(record), sealed, ttlSeconds * 1000);
      const written = await (localCache ? localCache.writing(key, write) : write());
      if (written !== 1) return;
      const pipeline = redis.pipeline();
      for (const [kind, value] of indexEntries(record)) {
        pipeline.sadd(this.key(kind, value), record.id);
        pipeline.pexpire(this.key(kind, value), absoluteTimeoutSeconds * 1000);
      }
      await pipeline.exec();
    });
  }

  async delete(id: string): Promise<void> {
    const record = await this.get(id);
    const { redis, localCache } = this.options;
    const key = this.key('session', id);
    await storeCall('delete', async () => {
      const pipeline = redis.pipeline().del(key);
      if (record) for (const [kind, value] of indexEntries(record)) pipeline.srem(this.key(kind, value), id);
      const remove = () => pipeline.exec();
      await (localCache ? localCache.writing(key, remove) : remove());
    });
  }

  findBySid(sid: string): Promise<string[]> {
    return storeCall('findBySid', () => this.options.redis.smembers(this.key('sid', sid)));
  }

  findBySub(sub: string): Promise<string[]> {
    return storeCall('findBySub', () => this.options.redis.smembers(this.key('sub', sub)));
  }

  /** Counting would mean a SCAN over the keyspace: not offered. */
  async count(): Promise<undefined> {
    return undefined;
  }

  async ping(): Promise<boolean> {
    try {
      return (await this.options.redis.ping()) === 'PONG';
    } catch {
      return false;
    }
  }

  async close(): Promise<void> {
    this.options.localCache?.close();
    this.options.redis.disconnect();
  }
}

function indexEntries(record: SessionRecord): Array<['sid' | 'sub', string]> {
  const entries: Array<['sid' | 'sub', string]> = [];
  if (typeof record.claims.sid === 'string') entries.push(['sid', record.claims.sid]);
  if (typeof record.claims.sub === 'string') entries.push(['sub', record.claims.sub]);
  return entries;
}
