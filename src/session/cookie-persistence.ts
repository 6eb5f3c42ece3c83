import type { SessionPersistence } from './persistence.js';
import type { SessionRecord } from './record.js';
import type { Sealer } from './sealer.js';

/** The `cookie` store: the whole record, sealed, is the cookie. Nothing is kept on the server. */
export class CookiePersistence implements SessionPersistence {
  readonly kind = 'cookie';

  constructor(
    private readonly sealer: Sealer,
    /** Upper bound of a seal's life, baked into the seal itself. */
    private readonly maxTtlSeconds: number,
  ) {}

  async read(cookieValue: string): Promise<SessionRecord | null> {
    const record = await this.sealer.unseal<SessionRecord>(cookieValue, this.maxTtlSeconds);
    return record && isSessionRecord(record) ? record : null;
  }

  write(record: SessionRecord): Promise<string> {
    return this.sealer.seal(record, this.maxTtlSeconds);
  }

  async remove(): Promise<void> {}

  async close(): Promise<void> {}
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
    typeof r.accessTokenExpiresAt === 'number' &&
    typeof r.createdAt === 'number' &&
    typeof r.lastSeenAt === 'number' &&
    typeof r.claims === 'object' &&
    r.claims !== null
  );
}
