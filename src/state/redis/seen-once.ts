import type { SeenOnce } from '../ports.js';
import { storeCall } from './client.js';
import type { StoreClient } from './connection.js';
import type { KeyLayout } from './keys.js';

/** Shared by all replicas: a replay sent to another replica is refused too. */
export class RedisSeenOnce implements SeenOnce {
  constructor(
    private readonly redis: StoreClient,
    private readonly keys: KeyLayout,
  ) {}

  async firstTime(value: string, ttlMs: number): Promise<boolean> {
    const result = await storeCall('replay check', () => this.redis.set(this.keys.seen(value), '1', 'PX', ttlMs, 'NX'));
    return result === 'OK';
  }
}
