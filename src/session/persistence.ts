import type { SessionRecord } from './record.js';

/**
 * How a session record travels between requests. The session cookie always holds a
 * sealed value; what it seals depends on the store:
 * - `cookie`: the whole record (stateless);
 * - `memory` / `redis`: only the session id, the record stays on the server.
 */
export interface SessionPersistence {
  readonly kind: 'cookie' | 'memory' | 'redis';
  /** The record behind a cookie value, or null when it is not (or no longer) a valid session. */
  read(cookieValue: string): Promise<SessionRecord | null>;
  /**
   * Stores the record and returns the cookie value to send. `currentCookie` is the value
   * this record was read from: a server-side store keeps it, so the browser's cookie
   * does not change.
   */
  write(record: SessionRecord, ttlSeconds: number, currentCookie?: string): Promise<string>;
  /** Forgets the record (server-side stores); the cookie is cleared by the caller. */
  remove(record: SessionRecord): Promise<void>;
  /** Releases connections and timers. */
  close(): Promise<void>;
}
