import type { SessionStore, UpdateOutcome } from '../ports.js';
import { tokenVersion, type SessionRecord } from '../record.js';

/**
 * Sessions in this process: for a single replica. Expired records are refused on read
 * and swept periodically so abandoned sessions do not accumulate.
 */
export class MemorySessionStore implements SessionStore {
  private readonly records = new Map<string, { record: SessionRecord; expiresAt: number }>();
  private readonly sweeper: NodeJS.Timeout;

  constructor(
    private readonly now: () => number,
    sweepIntervalMs = 60_000,
  ) {
    this.sweeper = setInterval(() => this.sweep(), sweepIntervalMs);
    this.sweeper.unref();
  }

  get(id: string): SessionRecord | null {
    const entry = this.records.get(id);
    if (!entry) return null;
    if (entry.expiresAt <= this.now()) {
      this.records.delete(id);
      return null;
    }
    return entry.record;
  }

  async create(record: SessionRecord, ttlSeconds: number): Promise<void> {
    this.records.set(record.id, { record, expiresAt: this.now() + ttlSeconds * 1000 });
  }

  async update(record: SessionRecord, ttlSeconds: number): Promise<UpdateOutcome> {
    // Synchronous from the read to the write: nothing can end the session in between.
    if (this.get(record.id) === null) return 'ended';
    const existing = this.records.get(record.id)!;
    // A request that loaded the session before a refresh must not write the spent tokens back.
    if (tokenVersion(existing.record) > tokenVersion(record)) return 'stale';
    this.records.set(record.id, { record, expiresAt: this.now() + ttlSeconds * 1000 });
    return 'written';
  }

  async slide(id: string, lastSeenAt: number, ttlSeconds: number): Promise<'written' | 'ended'> {
    const record = this.get(id);
    if (record === null) return 'ended';
    const slid = lastSeenAt > record.lastSeenAt ? { ...record, lastSeenAt } : record;
    this.records.set(id, { record: slid, expiresAt: this.now() + ttlSeconds * 1000 });
    return 'written';
  }

  async delete(id: string): Promise<SessionRecord | null> {
    const last = this.get(id);
    this.records.delete(id);
    return last;
  }

  async findBySid(sid: string): Promise<string[]> {
    return this.find((record) => record.claims.sid === sid);
  }

  async findBySub(sub: string): Promise<string[]> {
    return this.find((record) => record.claims.sub === sub);
  }

  async count(): Promise<number> {
    return this.records.size;
  }

  async close(): Promise<void> {
    clearInterval(this.sweeper);
    this.records.clear();
  }

  /** Removes every expired record; returns how many went. */
  sweep(): number {
    const now = this.now();
    let removed = 0;
    for (const [id, entry] of this.records) {
      if (entry.expiresAt <= now) {
        this.records.delete(id);
        removed++;
      }
    }
    return removed;
  }

  private find(matches: (record: SessionRecord) => boolean): string[] {
    const now = this.now();
    const ids: string[] = [];
    for (const [id, entry] of this.records) if (entry.expiresAt > now && matches(entry.record)) ids.push(id);
    return ids;
  }
}
