import type { Awaitable } from '../awaitable.js';
import type { SessionRecord } from '../state/record.js';

/** What a back-channel logout names: a provider session, or (only `sub`) all of a user's sessions. */
export interface ProviderLogout {
  sid?: string;
  sub?: string;
}

/**
 * How a session record travels between requests. The session cookie always holds a
 * sealed value; what it seals depends on the store:
 * - `cookie`: the whole record (stateless);
 * - `memory` / `redis`: only the session id, the record stays on the server.
 */
export interface SessionPersistence {
  readonly kind: 'cookie' | 'memory' | 'redis';
  /**
   * The record behind a cookie value, or null when it is not (or no longer) a valid
   * session. Synchronous when everything it needs is in memory.
   */
  read(cookieValue: string): Awaitable<SessionRecord | null>;
  /**
   * Stores the record and returns the cookie value to send. `currentCookie` is the value
   * this record was read from: without it the session is new; with it, it must still be
   * live — a session that ended meanwhile is never written back (SessionEndedError). A
   * server-side store keeps that value, so the browser's cookie does not change.
   */
  write(record: SessionRecord, ttlSeconds: number, currentCookie?: string): Promise<string>;
  /**
   * An idle-timeout slide of a live session read from `currentCookie`: `record` is that
   * session with only `lastSeenAt` moved. A server-side store moves its last use and time to
   * live without rewriting the record; the cookie store seals the record again (`write`).
   */
  slide(record: SessionRecord, ttlSeconds: number, currentCookie: string): Promise<string>;
  /**
   * Ends the session for good: deletes the record (server-side stores) or denylists it
   * (cookie store), so a copy of the cookie never works again. The cookie itself is
   * cleared by the caller. Returns the record the store held last, when it holds one: a
   * refresh by another request may have replaced the caller's tokens.
   */
  remove(record: SessionRecord): Promise<SessionRecord | null>;
  /**
   * Ends every session of a provider session (`sid`), or all of a user's (`sub` only)
   * that started before `at` (epoch ms). Returns how many ended, when the store knows.
   */
  endMatching(match: ProviderLogout, at: number): Promise<number | undefined>;
}
