import type { FastifyInstance, FastifyReply } from 'fastify';
import { BrowserError, loginRequired } from '../errors.js';
import type { RequestCheck } from '../proxy/csrf.js';
import type { SessionManager } from '../session/manager.js';
import { sessionExpiry, type SessionTimeouts } from '../session/record.js';
import { signalMatches } from '../session/signals.js';
import type { SessionEndKind, SessionSignal, SessionSignals } from '../state/ports.js';
import { sessionHash } from '../state/record.js';

export interface EventsRouteOptions {
  sessions: SessionManager;
  signals: SessionSignals;
  timeouts: SessionTimeouts;
  now: () => number;
  originCheck: RequestCheck;
  /** Streams one session may hold open on this replica. */
  maxStreamsPerSession: number;
  /** A comment line this often keeps proxies from closing a quiet stream. */
  heartbeatMs?: number;
  /** How often a stream looks at the clock for the idle and absolute timeouts. */
  tickMs?: number;
}

/** How long before the idle timeout `session-expiring` is sent. */
const EXPIRING_WARNING_MS = 60_000;

/**
 * `GET /auth/events`: a server-sent event stream for the current session —
 * `session-refreshed`, `session-expiring` (idle timeout within a minute) and
 * `session-ended` (with its reason), from whichever replica it happened on; the stream
 * closes after `session-ended`. Nothing in it is a token.
 */
export async function eventsRoute(app: FastifyInstance, options: EventsRouteOptions): Promise<void> {
  const { sessions, signals, timeouts, now } = options;
  const heartbeatMs = options.heartbeatMs ?? 15_000;
  const tickMs = options.tickMs ?? 1000;
  const openBySession = new Map<string, number>();
  const open = new Set<() => void>();

  // Open streams would hold the server open: they end with it.
  app.addHook('preClose', async () => {
    for (const close of [...open]) close();
  });

  app.get('/auth/events', async (request, reply) => {
    options.originCheck(request);
    const loaded = await sessions.load(request, reply);
    if (!loaded) throw loginRequired();
    let record = loaded.record;
    const hash = sessionHash(record);
    const streams = openBySession.get(hash) ?? 0;
    if (streams >= options.maxStreamsPerSession) {
      throw new BrowserError('too_many_requests', `This session has ${streams} event streams open already: one per tab is enough.`, 5);
    }
    openBySession.set(hash, streams + 1);

    const res = startStream(reply);
    const send = (event: string, data: Record<string, unknown>) => res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
    let warned = false;
    let closed = false;

    const close = () => {
      if (closed) return;
      closed = true;
      clearInterval(ticker);
      clearInterval(heartbeat);
      unsubscribe();
      open.delete(close);
      const left = (openBySession.get(hash) ?? 1) - 1;
      if (left > 0) openBySession.set(hash, left);
      else openBySession.delete(hash);
      res.end();
    };
    const ended = (reason: SessionEndKind) => {
      send('session-ended', { reason });
      close();
    };
    const slid = (lastSeenAt: number) => {
      if (lastSeenAt > record.lastSeenAt) {
        record = { ...record, lastSeenAt };
        warned = false;
      }
    };

    const unsubscribe = signals.subscribe((signal: SessionSignal) => {
      if (closed || !signalMatches(signal.match, record, hash)) return;
      switch (signal.kind) {
        case 'refreshed':
          slid(signal.lastSeenAt);
          send('session-refreshed', { accessTokenExpiresAt: new Date(signal.accessTokenExpiresAt).toISOString() });
          return;
        case 'touched':
          slid(signal.lastSeenAt);
          return;
        case 'ended':
          ended(signal.reason);
          return;
      }
    });

    const ticker = setInterval(() => {
      const at = now();
      if (sessionExpiry(record, at, timeouts)) {
        // The stream's own view may be behind a slide it was not told of: the store decides.
        void Promise.resolve(sessions.reread(loaded.cookieValue)).then(
          (current) => {
            if (closed) return;
            if (current && !sessionExpiry(current, now(), timeouts)) slid(current.lastSeenAt);
            else ended('timeout');
          },
          () => undefined,
        );
        return;
      }
      const idleEnd = Math.min(record.lastSeenAt + timeouts.idleTimeoutSeconds * 1000, record.createdAt + timeouts.absoluteTimeoutSeconds * 1000);
      if (!warned && idleEnd - at <= EXPIRING_WARNING_MS) {
        warned = true;
        send('session-expiring', { idleExpiresAt: new Date(idleEnd).toISOString() });
      }
    }, tickMs);
    const heartbeat = setInterval(() => res.write(': heartbeat\n\n'), heartbeatMs);
    open.add(close);
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
