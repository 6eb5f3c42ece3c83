import { createHash } from 'node:crypto';
import type { TokenSet } from '../oidc/token-set.js';

/**
 * What token-handler keeps about one signed-in browser: the provider's tokens (access
 * token and its expiry, refresh token, ID token, granted scope) and the user's claims.
 * It never leaves the server in clear: in the `cookie` store it travels sealed; in
 * server-side stores only a sealed session id travels.
 */
export interface SessionRecord extends Omit<TokenSet, 'claims'> {
  /** Our own random session id (≥128 bits), used for denylists, logs (hashed) and server-side stores. */
  id: string;
  /** ID-token claims of the user (signature and claims verified at login and refresh). */
  claims: Record<string, unknown>;
  /** Epoch milliseconds. */
  createdAt: number;
  lastSeenAt: number;
  /** Epoch milliseconds of the last successful refresh, if any. */
  refreshedAt?: number;
  /**
   * Per-API tokens of `token: user` routes with a `resource` (RFC 8707), by resource URI:
   * each obtained with the refresh token for that resource alone, with its own expiry.
   */
  resourceTokens?: Record<string, ApiToken>;
  /**
   * Per-API tokens of `token: exchange` routes (RFC 8693), by exchangeKey(audience, scope,
   * resource); each remembers which user access token it was exchanged from.
   */
  exchangedTokens?: Record<string, ApiToken>;
  /**
   * oidc.dpop without a configured key: the private scalar (`d`, base64url) of the session's
   * own ES256 DPoP key, made at login; every token of the session is bound to it
   * (src/oidc/dpop.ts). Sealed with the rest of the record; never shown, never logged.
   */
  dpopKey?: string;
  /** The browser's User-Agent at login (server-side stores only: it would only grow a cookie). */
  userAgent?: string;
}

/** An access token obtained for one API (a resource, or an exchange's audience). */
export interface ApiToken {
  accessToken: string;
  tokenType: string;
  /** Epoch milliseconds. */
  expiresAt: number;
  /** Epoch milliseconds when it was obtained (its life, for the refresh skew). */
  obtainedAt: number;
  /** Exchanged tokens: a hash of the user access token it was exchanged from. */
  subject?: string;
}

/**
 * Whether an API token is gone or will be within the skew (never more than half its life,
 * as for the session's own access token).
 */
export function isApiTokenDue(token: ApiToken | undefined, now: number, skewMs: number): boolean {
  if (!token) return true;
  const life = token.expiresAt - token.obtainedAt;
  return token.expiresAt - Math.min(skewMs, life / 2) <= now;
}

/** Grows with every refresh; a record with a lower version holds spent tokens. */
export function tokenVersion(record: SessionRecord): number {
  return record.refreshedAt ?? record.createdAt;
}

/**
 * A log-safe session identifier: never the id itself. Memoised per record object (it is
 * logged with every request, and a busy session's record is the same object from request
 * to request: the unseal cache, the memory store and the Redis local cache hand it out).
 */
const sessionHashes = new WeakMap<SessionRecord, string>();
export function sessionHash(record: SessionRecord): string {
  let hash = sessionHashes.get(record);
  if (hash === undefined) {
    hash = sessionHashOfId(record.id);
    sessionHashes.set(record, hash);
  }
  return hash;
}

export function sessionHashOfId(id: string): string {
  return createHash('sha256').update(id).digest('base64url').slice(0, 12);
}
