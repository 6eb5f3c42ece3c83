import { andThen, type Awaitable } from '../awaitable.js';
import type { ProviderLogout, SessionPersistence } from './persistence.js';
import type { Sealer } from '../state/sealer.js';
import { SessionEndedError, type SessionStore } from '../state/ports.js';
import type { SessionRecord } from '../state/record.js';

interface SessionPointer {
  sid: string;
}

/** `memory` and `redis`: the cookie carries only the sealed session id; the record stays in the store. */
export class ServerSidePersistence implements SessionPersistence {
  constructor(
    readonly kind: 'memory' | 'redis',
    readonly store: SessionStore,
    private readonly sealer: Sealer,
    private readonly maxTtlSeconds: number,
  ) {}

  read(cookieValue: string): Awaitable<SessionRecord | null> {
    return andThen(this.sealer.unseal<SessionPointer>(cookieValue), (pointer) => {
      if (!pointer || typeof pointer.sid !== 'string') return null;
      // A record under another id would mean a corrupted store entry: not this browser's session.
      return andThen(this.store.get(pointer.sid), (record) => (record && record.id === pointer.sid ? record : null));
    });
  }

  async write(record: SessionRecord, ttlSeconds: number, currentCookie?: string): Promise<string> {
    if (currentCookie === undefined) {
      await this.store.create(record, ttlSeconds);
      return this.sealer.seal({ sid: record.id } satisfies SessionPointer, this.maxTtlSeconds, true);
    }
    if ((await this.store.update(record, ttlSeconds)) === 'ended') throw new SessionEndedError(record.id);
    return currentCookie;
  }

  async slide(record: SessionRecord, ttlSeconds: number, currentCookie: string): Promise<string> {
    if ((await this.store.slide(record.id, record.lastSeenAt, ttlSeconds)) === 'ended') throw new SessionEndedError(record.id);
    return currentCookie;
  }

  remove(record: SessionRecord): Promise<SessionRecord | null> {
    return this.store.delete(record.id);
  }

  async endMatching(match: ProviderLogout): Promise<number> {
    const ids = match.sid ? await this.store.findBySid(match.sid) : match.sub ? await this.store.findBySub(match.sub) : [];
    let ended = 0;
    // The index may still name a session that expired or ended meanwhile.
    for (const id of ids) if (await this.store.delete(id)) ended++;
    return ended;
  }
}
