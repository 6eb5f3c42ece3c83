import { andThen, type Awaitable } from '../../awaitable.js';
import type { Denylist } from '../ports.js';
import type { SessionRecord } from '../record.js';
import { storeCall } from './client.js';
import type { StoreClient } from './connection.js';
import type { KeyLayout } from './keys.js';
import type { RedisTrackedCache } from './tracked-cache.js';

/**
 * The denylist shared by every replica through Redis: one MGET per check, or none when
 * the replica's local cache (Redis client tracking, see tracked-cache.ts) holds the
 * three answers; a deny written by any replica drops them from every cache at once.
 * On a Cluster the three keys live in different slots: three GETs, sent together.
 */
export class RedisDenylist implements Denylist {
  constructor(
    private readonly redis: StoreClient,
    private readonly keys: KeyLayout,
    private readonly lifetimeMs: number,
    private readonly localCache?: RedisTrackedCache,
  ) {}

  denySession(id: string): Promise<void> {
    return this.put(this.keys.deny('id', id), 0);
  }

  denyProviderSession(sid: string): Promise<void> {
    return this.put(this.keys.deny('sid', sid), 0);
  }

  denySubject(sub: string, at: number): Promise<void> {
    return this.put(this.keys.deny('sub', sub), at);
  }

  /** Synchronous when the local cache holds the answers. */
  isDenied(record: SessionRecord): Awaitable<boolean> {
    const sid = typeof record.claims.sid === 'string' ? record.claims.sid : '';
    const sub = typeof record.claims.sub === 'string' ? record.claims.sub : '';
    const names = [this.keys.deny('id', record.id), this.keys.deny('sid', sid), this.keys.deny('sub', sub)];
    const fetch = () => storeCall('denylist check', () => (this.keys.clustered ? Promise.all(names.map((name) => this.redis.get(name))) : this.redis.mget(names)));
    const entries = this.localCache ? this.localCache.readMany(names, fetch) : fetch();
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
