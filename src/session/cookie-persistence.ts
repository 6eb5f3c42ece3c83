import { andThen, type Awaitable } from '../awaitable.js';
import type { ProviderLogout, SessionPersistence } from './persistence.js';
import type { Sealer } from '../state/sealer.js';
import { SessionEndedError } from '../state/ports.js';
import type { Denylist } from '../state/ports.js';
import type { SessionRecord } from '../state/record.js';

/**
 * The `cookie` store: the whole record, sealed, is the cookie. Nothing is kept on the
 * server but a denylist of ended sessions (in memory, or in Redis when configured).
 */
export class CookiePersistence implements SessionPersistence {
  readonly kind = 'cookie';

  constructor(
    private readonly sealer: Sealer,
    /** Upper bound of a seal's life, baked into the seal itself. */
    private readonly maxTtlSeconds: number,
    private readonly denylist: Denylist,
  ) {}

  read(cookieValue: string): Awaitable<SessionRecord | null> {
    return andThen(this.sealer.unseal<SessionRecord>(cookieValue), (record) => {
      if (!record || !isSessionRecord(record)) return null;
      return andThen(this.denylist.isDenied(record), (denied) => (denied ? null : record));
    });
  }

  /** An existing session is sealed again only while it is not denylisted: an ended session gets no new cookie. */
  async write(record: SessionRecord, _ttlSeconds: number, currentCookie?: string): Promise<string> {
    if (currentCookie !== undefined && (await this.denylist.isDenied(record))) throw new SessionEndedError(record.id);
    // The old cookie stays in the unseal cache: requests already on their way with it must
    // find the same record (one idle-timeout slide for all of them, see SessionManager.touch).
    return this.sealer.seal(record, this.maxTtlSeconds, true);
  }

  /** The cookie is the record: a slide seals it again. */
  slide(record: SessionRecord, ttlSeconds: number, currentCookie: string): Promise<string> {
    return this.write(record, ttlSeconds, currentCookie);
  }

  async remove(record: SessionRecord): Promise<null> {
    await this.denylist.denySession(record.id);
    return null;
  }

  async endMatching(match: ProviderLogout, at: number): Promise<undefined> {
    if (match.sid) await this.denylist.denyProviderSession(match.sid);
    else if (match.sub) await this.denylist.denySubject(match.sub, at);
    return undefined;
  }
}

/** A seal made with our secret but of another shape (e.g. a pending-login seal) is no session. */
export function isSessionRecord(value: unknown): value is SessionRecord {
  const r = value as Partial<SessionRecord>;
  return (
    typeof r === 'object' &&
    r !== null &&
    typeof r.id === 'string' &&
    typeof r.accessToken === 'string' &&
    typeof r.tokenType === 'string' &&
    isTime(r.accessTokenExpiresAt) &&
    isTime(r.createdAt) &&
    isTime(r.lastSeenAt) &&
    (r.refreshedAt === undefined || isTime(r.refreshedAt)) &&
    typeof r.claims === 'object' &&
    r.claims !== null
  );
}

/** An epoch-milliseconds time that a Date can represent. */
function isTime(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && Math.abs(value) <= 8.64e15;
}
