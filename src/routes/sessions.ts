import { createHash } from 'node:crypto';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { BrowserError, loginRequired } from '../errors.js';
import type { RequestCheck } from '../proxy/csrf.js';
import type { SessionManager } from '../session/manager.js';
import { sessionExpiry, type SessionTimeouts } from '../session/record.js';
import type { SessionStore } from '../state/ports.js';
import type { SessionRecord } from '../state/record.js';
import type { TokenRevoker } from '../tokens/revoker.js';
import { coarseUserAgent } from './user-agent.js';

export interface SessionsRoutesOptions {
  sessions: SessionManager;
  /** The server-side store; absent with the cookie store, which cannot list sessions. */
  store: SessionStore | undefined;
  revoker: TokenRevoker;
  timeouts: SessionTimeouts;
  now: () => number;
  csrfCheck: RequestCheck;
  originCheck: RequestCheck;
}

/** What `GET /auth/sessions` shows of one session: never a token, never its id. */
interface SessionEntry {
  id: string;
  createdAt: string;
  lastSeenAt: string;
  current: boolean;
  userAgent: string | null;
}

/**
 * `GET /auth/sessions` and `DELETE /auth/sessions/{id}`: the signed-in user's sessions on
 * the server stores, found through the store's per-user index. Ids are handles derived
 * from the session id by a one-way hash, so one can never be turned into a cookie.
 */
export async function sessionsRoutes(app: FastifyInstance, options: SessionsRoutesOptions): Promise<void> {
  const { sessions, store, timeouts, now } = options;

  const requireStore = (): SessionStore => {
    if (!store) throw new BrowserError('not_supported', 'The cookie store keeps no list of sessions: listing and ending other sessions needs session.store memory or redis.');
    return store;
  };

  /** The user's live sessions, the current one among them. */
  const sessionsOf = async (current: SessionRecord): Promise<SessionRecord[]> => {
    const live = requireStore();
    const sub = current.claims.sub;
    if (typeof sub !== 'string') return [current];
    const found: SessionRecord[] = [];
    for (const id of await live.findBySub(sub)) {
      const record = await live.get(id);
      if (record && record.claims.sub === sub && !sessionExpiry(record, now(), timeouts)) found.push(record);
    }
    return found;
  };

  const signedIn = async (request: FastifyRequest, reply: Parameters<SessionManager['load']>[1]) => {
    requireStore();
    const loaded = await sessions.load(request, reply);
    if (!loaded) throw loginRequired();
    return loaded;
  };

  app.get('/auth/sessions', async (request, reply) => {
    options.originCheck(request);
    const loaded = await signedIn(request, reply);
    const list = (await sessionsOf(loaded.record)).sort((a, b) => b.lastSeenAt - a.lastSeenAt);
    return list.map((record): SessionEntry => ({
      id: sessionHandle(record.id),
      createdAt: new Date(record.createdAt).toISOString(),
      lastSeenAt: new Date(record.lastSeenAt).toISOString(),
      current: record.id === loaded.record.id,
      userAgent: record.userAgent ? coarseUserAgent(record.userAgent) : null,
    }));
  });

  app.delete<{ Params: { id: string } }>('/auth/sessions/:id', async (request, reply) => {
    options.csrfCheck(request);
    const loaded = await signedIn(request, reply);
    const target = (await sessionsOf(loaded.record)).find((record) => sessionHandle(record.id) === request.params.id);
    if (!target) throw new BrowserError('not_found', 'No session of yours has this id.');
    const current = target.id === loaded.record.id;
    const last = current ? await sessions.end(request, reply, target, 'user') : await sessions.endSession(target, 'elsewhere', request.log);
    await options.revoker.revoke([target, last], request.log, current ? 'logout' : 'session ended by its user');
    return reply.code(204).send();
  });
}

/** The handle shown for a session: a one-way hash of its id, distinct from the log hash. */
export function sessionHandle(sessionId: string): string {
  return createHash('sha256').update(`session handle:${sessionId}`).digest('base64url').slice(0, 22);
}
