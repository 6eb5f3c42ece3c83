import { andThen, type Awaitable } from '../awaitable.js';
import type { RedisTrackedCache } from './redis-tracked-cache.js';
import type { Redis } from 'ioredis';
import type { SessionRecord } from './record.js';
import { storeCall } from './redis-client.js';

/**
 * Ended sessions that still have a valid cookie somewhere (the `cookie` store keeps no
 * record to delete): our own session ids, the provider's `sid`s, and `sub`s with the time
 * before which their sessions ended. Entries live as long as a session may (the
 * absolute timeout), so a cookie captured before a logout never works again.
 */
export interface Denylist {
  denySession(id: string): Promise<void>;
  denyProviderSession(sid: string): Promise<void>;
  /** Every session of this user that started before `at` (epoch ms) has ended. */
  denySubject(sub: string, at: number): Promise<void>;
  /** Synchronous for the in-memory list (asked on every request of the cookie store). */
  isDenied(record: SessionRecord): Awaitable<boolean>;
  close(): Promise<void>;
}

export class MemoryDenylist implements Denylist {
  private readonly entries = new Map<string, { value: number; expiresAt: number }>();

  constructor(
    private readonly lifetimeMs: number,
    private readonly now: () => number,
  ) {}

  async denySession(id: string): Promise<void> {
    this.put(`id:${id}`, 0);
  }

  async denyProviderSession(sid: string): Promise<void> {
    this.put(`sid:${sid}`, 0);
  }

  async denySubject(sub: string, at: number): Promise<void> {
    this.put(`sub:${sub}`, Math.max(at, this.entries.get(`sub:${sub}`)?.value ?? 0));
  }

  isDenied(record: SessionRecord): boolean {
    if (this.entries.size === 0) return false;
    if (this.get(`id:${record.id}`) !== undefined) return true;
    if (typeof record.claims.sid === 'string' && this.get(`sid:${record.claims.sid}`) !== undefined) return true;
    const subjectEnd = typeof record.claims.sub === 'string' ? this.get(`sub:${record.claims.sub}`) : undefined;
    return subjectEnd !== undefined && record.createdAt <= subjectEnd;
  }

  async close(): Promise<void> {
    this.entries.clear();
  }

  private put(key: string, value: number): void {
    const now = this.now();
    for (const [k, entry] of this.entries) if (entry.expiresAt <= now) this.entries.delete(k);
    this.entries.set(key, { value, expiresAt: now + this.lifetimeMs });
  }

  private get(key: string): number | undefined {
    const entry = this.entries.get(key);
    return entry && entry.expiresAt > this.now() ? entry.value : undefined;
  }
}

/**
 * The denylist shared by every replica through Redis: one MGET per check, or none when
 * the replica's local cache (Redis client tracking, see redis-tracked-cache.ts) holds the
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

  async close(): Promise<void> {
    this.localCache?.close();
  }

  private async put(key: string, value: number): Promise<void> {
    const write = () => this.redis.set(key, String(value), 'PX', this.lifetimeMs);
    await storeCall('denylist write', () => (this.localCache ? this.localCache.writing(key, write) : write()));
  }
}
