import type { Redis } from 'ioredis';
import { andThen, type Awaitable } from '../../awaitable.js';
import type { Denylist } from '../ports.js';
import type { SessionRecord } from '../record.js';
import { storeCall } from './client.js';
import type { RedisTrackedCache } from './tracked-cache.js';

/**
 * The denylist shared by every replica through Redis: one MGET per check, or none when
 * the replica's local cache (Redis client tracking, see tracked-cache.ts) holds the
 * three answers; a deny written by any replica drops them from every cache at once.
 */
export class RedisDenylist implements Denylist {
  constructor(
    private readonly redis: Redis,
    private readonly keyPrefix: string,
    private readonly lifetimeMs: number,
    private readonly localCache?: RedisTrackedCache,
  ) {}

  private key(kind: 'id' | 'sid' | 'sub', value: string): string {
    return `${this.keyPrefix}deny:${kind}:${value}`;
  }

  denySession(id: string): Promise<void> {
    return this.put(this.key('id', id), 0);
  }

  denyProviderSession(sid: string): Promise<void> {
    return this.put(this.key('sid', sid), 0);
  }

  denySubject(sub: string, at: number): Promise<void> {
    return this.put(this.key('sub', sub), at);
  }

  /** Synchronous when the local cache holds the answers. */
  isDenied(record: SessionRecord): Awaitable<boolean> {
    const sid = typeof record.claims.sid === 'string' ? record.claims.sid : '';
    const sub = typeof record.claims.sub === 'string' ? record.claims.sub : '';
    const keys = [this.key('id', record.id), this.key('sid', sid), this.key('sub', sub)];
    const fetch = () => storeCall('denylist check', () => this.redis.mget(keys));
    const entries = this.localCache ? this.localCache.readMany(keys, fetch) : fetch();
    return andThen(entries, ([byId, bySid, bySub]) => {
      if (byId !== null && byId !== undefined) return true;
      if (sid !== '' && bySid !== null && bySid !== undefined) return true;
      return sub !== '' && bySub !== null && bySub !== undefined && record.createdAt <= Number(bySub);
    });
  }

  private async put(key: string, value: number): Promise<void> {
    const write = () => this.redis.set(key, String(value), 'PX', this.lifetimeMs);
    await storeCall('denylist write', () => (this.localCache ? this.localCache.writing(key, write) : write()));
  }
}
