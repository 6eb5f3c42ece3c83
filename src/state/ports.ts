import type { Awaitable } from '../awaitable.js';
import { TokenHandlerError } from '../errors.js';
import type { TokenSet } from '../oidc/token-set.js';
import type { SessionRecord } from './record.js';

/**
 * What an update of a stored session did:
 * - `written`: the record is stored;
 * - `stale`: a newer record (a later refresh) is stored and was kept;
 * - `ended`: the session no longer exists (logged out, ended by back-channel logout or an
 *   operator, expired): nothing was written, and the session stays ended.
 */
export type UpdateOutcome = 'written' | 'stale' | 'ended';

/**
 * A server-side session store (`memory`, `redis`). Records are keyed by our session
 * id; the provider's `sid` and the user's `sub` find sessions for back-channel logout.
 * Only `create` brings a session into existence: every later write is an `update` that
 * the store itself refuses, atomically, once the session has ended, so a request that
 * loaded the session before its end can never write it back.
 */
export interface SessionStore {
  /** Synchronous when the record is in memory (the `memory` store; the `redis` store's local cache). */
  get(id: string): Awaitable<SessionRecord | null>;
  /** Stores a new session for `ttlSeconds`. */
  create(record: SessionRecord, ttlSeconds: number): Promise<void>;
  /** Replaces a live session's record and restarts its `ttlSeconds` (sliding). */
  update(record: SessionRecord, ttlSeconds: number): Promise<UpdateOutcome>;
  /**
   * An idle-timeout slide: a live session's last use becomes `lastSeenAt` (never earlier
   * than it was) and its `ttlSeconds` restart, the rest of the record left as stored — the
   * Redis store then neither seals nor sends the record again. `ended` when it no longer exists.
   */
  slide(id: string, lastSeenAt: number, ttlSeconds: number): Promise<'written' | 'ended'>;
  /** Ends the session; returns the record it held last (it may be newer than the caller's). */
  delete(id: string): Promise<SessionRecord | null>;
  findBySid(sid: string): Promise<string[]>;
  findBySub(sub: string): Promise<string[]>;
  /** Number of live sessions, where the store can count them cheaply. */
  count(): Promise<number | undefined>;
}

/** The store could not be reached or answered with an error: the browser gets 503 session_store_unavailable. */
export class SessionStoreUnavailableError extends TokenHandlerError {
  readonly code = 'ERR_TH_STORE_UNAVAILABLE';

  constructor(operation: string, options?: { cause?: unknown }) {
    super(`session store unavailable during ${operation}`, options);
  }
}

/**
 * A write was refused because the session ended meanwhile (logout, back-channel logout,
 * idle or absolute timeout, an operator): the browser gets 401 login_required, and tokens
 * the request obtained for it are revoked rather than kept.
 */
export class SessionEndedError extends TokenHandlerError {
  readonly code = 'ERR_TH_SESSION_ENDED';

  constructor(readonly sessionId: string) {
    super('the session ended while this request was using it');
  }
}

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
}

/** Remembers identifiers (e.g. logout-token `jti`s) to refuse a second use. */
export interface SeenOnce {
  /** True the first time a value is seen within `ttlMs`, false after. */
  firstTime(value: string, ttlMs: number): Promise<boolean>;
}

/**
 * Coordinates refreshes across replicas (Redis). Without one, coordination is
 * in-process only, which is enough for a single replica.
 */
export interface RefreshCoordinator {
  /** Runs `refresh` at most once across replicas for this key; everyone gets its result. */
  coordinate(key: string, refresh: () => Promise<TokenSet>): Promise<TokenSet>;
  /** What a finished refresh of this key obtained, while it is remembered across replicas. */
  remembered(key: string): Promise<TokenSet | null>;
}

/** Why a session ended, as `/auth/events` and closed sockets report it. */
export type SessionEndKind = 'logout' | 'backchannel' | 'timeout' | 'revoked' | 'ended-elsewhere';

/** Which sessions a signal is about: one (by its log-safe hash), or all of a provider session or user. */
export type SessionMatch = { sessionHash: string } | { sid: string } | { sub: string; createdBefore: number };

/**
 * Something that happened to sessions, told to every replica: a refresh (new access-token
 * expiry), an idle-timeout slide, an end. Carries no token and no session id.
 */
export type SessionSignal =
  | { kind: 'refreshed'; match: SessionMatch; accessTokenExpiresAt: number; lastSeenAt: number }
  | { kind: 'touched'; match: SessionMatch; lastSeenAt: number }
  | { kind: 'ended'; match: SessionMatch; reason: SessionEndKind };

/** Session signals across replicas (in this process, or through Redis pub/sub). */
export interface SessionSignals {
  /** Tells every replica (this one included). */
  publish(signal: SessionSignal): Promise<void>;
  /**
   * Tells this replica only: a server-side store's idle-timeout slide, which the other
   * replicas find in the store when they ask (SessionChannels asks before warning or ending).
   */
  tellThisReplica(signal: SessionSignal): void;
  /** Calls `listener` for every signal from now on, on this replica; returns the unsubscribe. */
  subscribe(listener: (signal: SessionSignal) => void): () => void;
}
