import type { SessionRecord } from '../state/record.js';

/** Claims and times safe to show the browser: never a token. */
export interface SessionView {
  claims: Record<string, unknown>;
  session: {
    createdAt: string;
    lastSeenAt: string;
    idleExpiresAt: string;
    absoluteExpiresAt: string;
    accessTokenExpiresAt: string;
    refreshedAt: string | null;
    scope: string | null;
  };
}

export interface SessionTimeouts {
  idleTimeoutSeconds: number;
  absoluteTimeoutSeconds: number;
}

export type SessionExpiry = 'idle' | 'absolute';

/** Whether a session has run past its idle or absolute timeout at `now`. */
export function sessionExpiry(record: SessionRecord, now: number, timeouts: SessionTimeouts): SessionExpiry | null {
  if (now >= record.createdAt + timeouts.absoluteTimeoutSeconds * 1000) return 'absolute';
  if (now >= record.lastSeenAt + timeouts.idleTimeoutSeconds * 1000) return 'idle';
  return null;
}

/**
 * What the browser may see of a session. `omitClaims` are ID-token protocol fields
 * (nonce, at_hash, …) that say nothing about the user and are left out.
 */
export function viewOf(record: SessionRecord, timeouts: SessionTimeouts, omitClaims: ReadonlySet<string> = new Set()): SessionView {
  const iso = (ms: number) => new Date(ms).toISOString();
  const absolute = record.createdAt + timeouts.absoluteTimeoutSeconds * 1000;
  const idle = Math.min(record.lastSeenAt + timeouts.idleTimeoutSeconds * 1000, absolute);
  return {
    claims: omitClaims.size === 0 ? record.claims : Object.fromEntries(Object.entries(record.claims).filter(([name]) => !omitClaims.has(name))),
    session: {
      createdAt: iso(record.createdAt),
      lastSeenAt: iso(record.lastSeenAt),
      idleExpiresAt: iso(idle),
      absoluteExpiresAt: iso(absolute),
      accessTokenExpiresAt: iso(record.accessTokenExpiresAt),
      refreshedAt: record.refreshedAt === undefined ? null : iso(record.refreshedAt),
      scope: record.scope ?? null,
    },
  };
}
