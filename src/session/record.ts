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
  /**
   * Routes with per-API tokens (`resource` or `token: exchange`), by prefix: when the token
   * the session holds for it expires (null: none obtained yet). Times only, never a token.
   */
  apiTokens?: Record<string, { expiresAt: string | null }>;
}

/** A route with a per-API token, as `/auth/user` names it. */
export interface ApiTokenRoute {
  prefix: string;
  kind: 'resource' | 'exchange';
  /** The resource URI, or the exchange key. */
  key: string;
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
export function viewOf(
  record: SessionRecord,
  timeouts: SessionTimeouts,
  omitClaims: ReadonlySet<string> = new Set(),
  apiRoutes: readonly ApiTokenRoute[] = [],
): SessionView {
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
    ...(apiRoutes.length > 0
      ? {
          apiTokens: Object.fromEntries(
            apiRoutes.map(({ prefix, kind, key }) => {
              const token = kind === 'resource' ? record.resourceTokens?.[key] : record.exchangedTokens?.[key];
              return [prefix, { expiresAt: token ? iso(token.expiresAt) : null }];
            }),
          ),
        }
      : {}),
  };
}
