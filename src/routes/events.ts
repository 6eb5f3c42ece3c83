import type { FastifyInstance, FastifyReply } from 'fastify';
import { BrowserError, loginRequired } from '../errors.js';
import type { RequestCheck } from '../proxy/csrf.js';
import type { SessionChannels } from '../session/channels.js';
import type { SessionManager } from '../session/manager.js';
import { sessionHash } from '../state/record.js';

export interface EventsRouteOptions {
  sessions: SessionManager;
  /** The registry of a session's long-lived channels: it ends them and tells them what happens. */
  channels: SessionChannels;
  originCheck: RequestCheck;
  /** Streams one session may hold open on this replica. */
  maxStreamsPerSession: number;
  /** A comment line this often keeps proxies from closing a quiet stream. */
  heartbeatMs?: number;
}

/**
 * `GET /auth/events`: a server-sent event stream for the current session —
 * `session-refreshed`, `session-expiring` (idle timeout within a minute) and
 * `session-ended` (with its reason), from whichever replica it happened on; the stream
 * closes after `session-ended`. Nothing in it is a token. The stream is one of the
 * session's channels (session/channels.ts), which hears every replica's session signals
 * and watches the timeouts, as it does for the session's WebSockets.
 */
export async function eventsRoute(app: FastifyInstance, options: EventsRouteOptions): Promise<void> {
  const { sessions, channels } = options;
  const heartbeatMs = options.heartbeatMs ?? 15_000;

  app.get('/auth/events', async (request, reply) => {
    options.originCheck(request);
    const loaded = await sessions.load(request, reply);
    if (!loaded) throw loginRequired();
    const streams = channels.count(sessionHash(loaded.record), 'events');
    if (streams >= options.maxStreamsPerSession) {
      throw new BrowserError('too_many_requests', `This session has ${streams} event streams open already: one per tab is enough.`, 5);
    }

    const res = startStream(reply);
    const send = (event: string, data: Record<string, unknown>) => res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
    let closed = false;
    const close = () => {
      if (closed) return;
      closed = true;
      clearInterval(heartbeat);
      unregister();
      res.end();
    };
    const unregister = channels.add(loaded.record, loaded.cookieValue, {
      kind: 'events',
      end: (why, reason) => {
        if (closed) return;
        // At shutdown the stream just ends: the browser reconnects to another replica.
        if (why !== 'shutdown') send('session-ended', { reason: reason ?? 'timeout' });
        close();
      },
      notify: (notice) => {
        if (notice.type === 'refreshed') send('session-refreshed', { accessTokenExpiresAt: new Date(notice.accessTokenExpiresAt).toISOString() });
        else send('session-expiring', { idleExpiresAt: new Date(notice.idleExpiresAt).toISOString() });
      },
    });
    const heartbeat = setInterval(() => res.write(': heartbeat\n\n'), heartbeatMs);
    request.raw.on('close', close);
  });
}

/** Takes the response over from Fastify and sends the event-stream headers at once. */
function startStream(reply: FastifyReply) {
  reply.hijack();
  const res = reply.raw;
  res.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-store',
    'x-content-type-options': 'nosniff',
    // nginx and similar proxies buffer responses unless told not to.
    'x-accel-buffering': 'no',
    'x-request-id': String(reply.request.id),
  });
  res.write('retry: 5000\n\n');
  return res;
}
