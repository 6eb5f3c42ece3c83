import type { Denylist } from '../ports.js';
import type { SessionRecord } from '../record.js';

/** The denylist of one process: forgotten on restart, unknown to other replicas. */
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

