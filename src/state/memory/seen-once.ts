import { BoundedTtlCache } from '../bounded-cache.js';
import type { SeenOnce } from '../ports.js';

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

