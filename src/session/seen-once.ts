import type { Redis } from 'ioredis';
import { BoundedTtlCache } from '../tokens/bounded-cache.js';
import { storeCall } from './redis-client.js';

/** Remembers identifiers (e.g. logout-token `jti`s) to refuse a second use. */
export interface SeenOnce {
  /** True the first time a value is seen within `ttlMs`, false after. */
  firstTime(value: string, ttlMs: number): Promise<boolean>;
}

export class MemorySeenOnce implements SeenOnce {
  private readonly seen: BoundedTtlCache<true>;

  constructor(maxEntries: number, now: () => number) {
    this.seen = new BoundedTtlCache(maxEntries, 60_000, now);
  }

  async firstTime(value: string, ttlMs: number): Promise<boolean> {
    if (this.seen.get(value)) return false;
    this.seen.set(value, true, ttlMs);
    return true;
  }
}

/** Shared by all replicas: a replay sent to another replica is refused too. */
export class RedisSeenOnce implements SeenOnce {
  constructor(
    private readonly redis: Redis,
    private readonly keyPrefix: string,
  ) {}

  async firstTime(value: string, ttlMs: number): Promise<boolean> {
    const result = await storeCall('replay check', () => this.redis.set(`${this.keyPrefix}seen:${value}`, '1', 'PX', ttlMs, 'NX'));
    return result === 'OK';
  }
}
