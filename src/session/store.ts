import type { Awaitable } from '../awaitable.js';
import type { SessionRecord } from './record.js';

/**
 * A server-side session store (`memory`, `redis`). Records are keyed by our session
 * id; the provider's `sid` and the user's `sub` find sessions for back-channel logout.
 */
export interface SessionStore {
  /** Synchronous when the record is in memory (the `memory` store; the `redis` store's local cache). */
  get(id: string): Awaitable<SessionRecord | null>;
  /** Stores the record for `ttlSeconds` (sliding: each set restarts it). */
  set(record: SessionRecord, ttlSeconds: number): Promise<void>;
  delete(id: string): Promise<void>;
  findBySid(sid: string): Promise<string[]>;
  findBySub(sub: string): Promise<string[]>;
  /** Number of live sessions, where the store can count them cheaply. */
  count(): Promise<number | undefined>;
  /** Whether the store answers (readiness). */
  ping(): Promise<boolean>;
  close(): Promise<void>;
}

/** The store could not be reached or answered with an error: the browser gets 503 session_store_unavailable. */
export class SessionStoreUnavailableError extends Error {
  constructor(operation: string, options?: { cause?: unknown }) {
    super(`session store unavailable during ${operation}`, options);
    this.name = 'SessionStoreUnavailableError';
  }
}
