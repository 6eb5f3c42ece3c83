import type { Redis } from 'ioredis';
import type { SeenOnce } from '../ports.js';
import { storeCall } from './client.js';

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
