import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { FastifyBaseLogger, FastifyReply, FastifyRequest } from 'fastify';
import type { ApiRouteConfig } from '../config/types.js';
import { BrowserError, loginRequired } from '../errors.js';
import type { Metrics } from '../ops/metrics.js';
import type { ChannelEnd, SessionChannels } from '../session/channels.js';
import type { SessionCookies } from '../session/cookies.js';
import type { LoadedSession } from '../session/manager.js';
import { sessionHash, type ApiToken } from '../state/record.js';
import type { RequestCheck } from './csrf.js';
import type { RoutePolicy } from './route-policy.js';
import type { Credential, TokenSource } from './token-source.js';

/** The close codes a SPA must handle (README "WebSockets and streams"). */
export const CLOSE_CODES: Record<ChannelEnd, { code: number; reason: string }> = {
  session_ended: { code: 4401, reason: 'session_ended' },
  token_expired: { code: 4001, reason: 'token_expired' },
  shutdown: { code: 1001, reason: 'going_away' },
};

/** Why a socket closed, for the close log line and `token_handler_websocket_closes_total`. */
export type SocketCloseReason = ChannelEnd | 'browser' | 'upstream' | 'upstream_unavailable' | 'dead_peer' | 'message_too_large';

/** What token-handler uses of a `ws` WebSocket (both the browser's and the upstream's). */
interface ProxiedSocket {
  readonly readyState: number;
  close(code?: number, reason?: string): void;
  terminate(): void;
  ping(): void;
  on(event: 'pong', listener: () => void): unknown;
  once(event: 'close', listener: (code: number) => void): unknown;
  /** `ws` keeps the network socket here: what ties a socket to its upgrade request. */
  readonly _socket?: Duplex;
}
const OPEN = 1;

/** What token-handler uses of the proxy's `ws` WebSocketServer. */
interface WebSocketServerLike {
  clients?: Set<ProxiedSocket>;
  on(event: 'headers', listener: (headers: string[], req: IncomingMessage) => void): void;
}

/** One proxied socket, from its upgrade to its close. */
interface SocketState {
  route: string;
  log: FastifyBaseLogger;
  openedAt: number;
  hash?: string | undefined;
  /** The upgrade's network connection. */
  net: Duplex;
  /** The proxy's WebSocket server (its clients), to find the browser's socket before the upstream answered. */
  server: { clients?: Set<ProxiedSocket> } | undefined;
  client?: ProxiedSocket;
  upstream?: ProxiedSocket;
  /** Set once token-handler decided to close it (before or after the upstream answered). */
  endedWith?: ChannelEnd;
  closedBy?: SocketCloseReason;
  closeCode?: number;
  bytesIn: number;
  bytesOut: number;
  messagesIn: number;
  messagesOut: number;
  unregister?: () => void;
  pinger?: NodeJS.Timeout;
  /** Both sides were connected (counted in the open-sockets gauge). */
  connected: boolean;
  done: boolean;
}

export interface WebSocketRouteOptions {
  route: ApiRouteConfig;
  source: TokenSource;
  routePolicy: RoutePolicy | undefined;
  channels: SessionChannels;
  cookies: SessionCookies;
  upgradeOriginCheck: RequestCheck;
  maxSocketsPerSession: number;
  metrics?: Metrics | undefined;
  /** The headers of the upstream upgrade: the proxy's own rules (our cookies out, the token in). */
  upstreamHeaders: (request: FastifyRequest) => IncomingHttpHeaders;
  tls: { rejectUnauthorized: boolean; ca?: Buffer };
  now: () => number;
}

/** Headers the `ws` client writes itself on the upstream upgrade; the browser's copies must not go along. */
const HANDSHAKE_HEADERS = ['host', 'upgrade', 'connection', 'sec-websocket-key', 'sec-websocket-version', 'sec-websocket-extensions', 'sec-websocket-protocol', 'content-length'];

/**
 * WebSockets on an API route (`websocket: true`): the upgrade is checked like a proxied call
 * (session, Origin instead of the CSRF header, route policy) before @fastify/http-proxy
 * takes it over; the upstream upgrade carries the route's token; every socket is registered
 * under its session in `SessionChannels` and closed with 4401 when the session ends.
 * Returns the upgrade check (a preHandler of the route) and the proxy options.
 */
export function webSocketRoute(options: WebSocketRouteOptions) {
  const { route, source, routePolicy, channels, metrics, now } = options;
  /** By the upgrade's network socket: the proxy's hooks get the WebSocket, whose `_socket` it is. */
  const states = new WeakMap<Duplex, SocketState>();
  /** Cookies a refresh during the upgrade check set: sent on the 101 answer. */
  const upgradeCookies = new WeakMap<IncomingMessage, string[]>();
  let headersHooked = false;

  const stateOf = (socket: unknown): SocketState | undefined => {
    const net = (socket as ProxiedSocket)._socket;
    return net ? states.get(net) : undefined;
  };

  /** Closes both sides now: the browser's with the code of `why`, the upstream's too. */
  const end = (state: SocketState, why: ChannelEnd): void => {
    if (state.endedWith) return;
    state.endedWith = why;
    state.closedBy = why;
    const { code, reason } = CLOSE_CODES[why];
    // Still waiting for the upstream: the browser's socket is open already (the proxy answers 101 first).
    state.client ??= [...(state.server?.clients ?? [])].find((client) => client._socket === state.net);
    if (state.client?.readyState === OPEN) state.client.close(code, reason);
    if (state.upstream?.readyState === OPEN) state.upstream.close(code, reason);
    // Not connected yet: the proxy's onConnect closes them as soon as the upstream answers.
  };

  /** The upgrade's connection closed: the socket's one log line, its metrics, its removal. */
  const finish = (state: SocketState): void => {
    if (state.done) return;
    state.done = true;
    if (state.pinger) clearInterval(state.pinger);
    state.unregister?.();
    const connected = state.connected;
    if (connected) metrics?.webSocketClosed(state.route, state.closedBy ?? 'browser');
    // The proxy closes the upstream when the browser's socket closes; should it not have (it leaves
    // sockets whose upstream was still connecting), it is closed here, after the proxy's own handlers.
    const upstream = state.upstream;
    if (upstream) setImmediate(() => upstream.readyState === OPEN && upstream.close(1001, 'going_away'));
    state.log.info(
      {
        route: state.route,
        ...(state.hash ? { session: state.hash } : {}),
        closedBy: connected ? (state.closedBy ?? 'browser') : (state.closedBy ?? 'upstream_unavailable'),
        ...(state.closeCode !== undefined ? { code: state.closeCode } : {}),
        durationMs: Date.now() - state.openedAt,
        bytesIn: state.bytesIn,
        bytesOut: state.bytesOut,
        messagesIn: state.messagesIn,
        messagesOut: state.messagesOut,
      },
      'websocket closed',
    );
  };

  /**
   * The upgrade's checks, before the proxy answers 101: Origin, the session and the
   * route's token (refreshed first when due), the route policy, the per-session limit.
   * A refusal is an ordinary HTTP answer with our JSON error.
   */
  const checkUpgrade = async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    if (!isUpgrade(request)) return;
    request.apiRoute = route.prefix;
    options.upgradeOriginCheck(request);
    const credential = await source.authorize(request, reply);
    const record = request.session;
    if (routePolicy) {
      if (!record) throw loginRequired();
      routePolicy.check(record, request.headers);
    }
    const hash = record ? sessionHash(record) : undefined;
    if (hash !== undefined && channels.count(hash, 'socket') >= options.maxSocketsPerSession) {
      throw new BrowserError('too_many_requests', `This session has ${options.maxSocketsPerSession} WebSockets open already.`, 5);
    }
    request.proxyState = { retried: false, nonceReplayed: false, dest: '', body: null, ...(credential ? { credential } : {}) };
    const net = request.raw.socket;
    const server = (reply as unknown as { wsProxy?: { wss?: WebSocketServerLike } }).wsProxy?.wss;
    const state: SocketState = { route: route.prefix, log: request.log, openedAt: Date.now(), hash, net, server, bytesIn: 0, bytesOut: 0, messagesIn: 0, messagesOut: 0, connected: false, done: false };
    states.set(net, state);
    if (record) {
      const cookieValue = (credential as { session?: LoadedSession } | undefined)?.session?.cookieValue ?? options.cookies.readSession(request) ?? '';
      const expiresAt = route.closeOnTokenExpiry ? expiryOf(credential) : undefined;
      state.unregister = channels.add(record, cookieValue, { kind: 'socket', expiresAt, end: (why) => end(state, why) });
    }
    net.once('close', () => finish(state));
    const setCookie = cookiesOf(reply);
    if (setCookie.length > 0) {
      upgradeCookies.set(request.raw, setCookie);
      if (!headersHooked) {
        headersHooked = true;
        // A refresh during the check may have changed the session cookie (cookie store): the 101 carries it.
        server?.on('headers', (headers, req) => {
          for (const cookie of upgradeCookies.get(req) ?? []) headers.push(`Set-Cookie: ${cookie}`);
        });
      }
    }
  };

  const count = (data: Buffer | ArrayBuffer | Buffer[]): number => (Array.isArray(data) ? data.reduce((n, b) => n + b.length, 0) : data.byteLength);

  const pingMs = route.websocketPingSeconds * 1000;
  const proxyOptions = {
    websocket: true,
    wsServerOptions: { maxPayload: route.websocketMaxMessageBytes },
    wsClientOptions: {
      maxPayload: route.websocketMaxMessageBytes,
      handshakeTimeout: route.connectTimeoutMs + route.responseTimeoutMs,
      rejectUnauthorized: options.tls.rejectUnauthorized,
      ...(options.tls.ca ? { ca: options.tls.ca } : {}),
      rewriteRequestHeaders: (_headers: IncomingHttpHeaders, request: FastifyRequest) => {
        const headers = options.upstreamHeaders(request);
        for (const name of HANDSHAKE_HEADERS) delete headers[name];
        return headers;
      },
    },
    wsHooks: {
      onConnect: (_context: unknown, rawClient: unknown, rawUpstream: unknown) => {
        const client = rawClient as ProxiedSocket;
        const upstream = rawUpstream as ProxiedSocket;
        const state = stateOf(client);
        if (!state) {
          // Not one this route checked: never passed on.
          client.terminate();
          upstream.terminate();
          return;
        }
        state.client = client;
        state.upstream = upstream;
        state.connected = true;
        metrics?.webSocketOpened(state.route);
        client.once('close', (code) => {
          state.closeCode ??= code;
          state.closedBy ??= code === 1009 ? 'message_too_large' : 'browser';
        });
        upstream.once('close', (code) => {
          state.closeCode ??= code;
          state.closedBy ??= code === 1009 ? 'message_too_large' : 'upstream';
        });
        if (state.endedWith) {
          // Ended while the upstream was answering: the upstream closes now, as the browser's did (or does now).
          const why = state.endedWith;
          state.endedWith = undefined;
          end(state, why);
          return;
        }
        // The browser left while the upstream was still answering: the proxy would leave the upstream open.
        if (client.readyState !== OPEN) {
          upstream.close(1001, 'going_away');
          return;
        }
        if (pingMs > 0) {
          let alive = true;
          client.on('pong', () => {
            alive = true;
          });
          state.pinger = setInterval(() => {
            if (!alive) {
              state.closedBy ??= 'dead_peer';
              client.terminate();
              return;
            }
            alive = false;
            if (client.readyState === OPEN) client.ping();
          }, pingMs).unref();
        }
      },
      onIncomingMessage: (_context: unknown, client: unknown, _upstream: unknown, message: { data: Buffer | ArrayBuffer | Buffer[] }) => {
        const state = stateOf(client);
        if (!state) return;
        state.messagesIn++;
        state.bytesIn += count(message.data);
        metrics?.webSocketMessage(state.route, 'in');
      },
      onOutgoingMessage: (_context: unknown, client: unknown, _upstream: unknown, message: { data: Buffer | ArrayBuffer | Buffer[] }) => {
        const state = stateOf(client);
        if (!state) return;
        state.messagesOut++;
        state.bytesOut += count(message.data);
        metrics?.webSocketMessage(state.route, 'out');
      },
    },
  };
  return { checkUpgrade, proxyOptions };
}

/**
 * The cookies set on a reply so far, serialized. @fastify/cookie writes them in an onSend
 * hook, which never runs for an upgrade (the proxy takes the connection over): they are read
 * from its per-reply map (a symbol it does not export; covered by test/websockets.test.ts
 * "the 101 answer carries the new session cookie").
 */
function cookiesOf(reply: FastifyReply): string[] {
  const key = Object.getOwnPropertySymbols(reply).find((symbol) => symbol.description === 'fastify.reply.setCookies');
  const pending = key ? (reply as unknown as Record<symbol, Map<string, { name: string; value: string; opts: object }> | null>)[key] : null;
  if (!pending || pending.size === 0) return [];
  const serialize = (reply.server as unknown as { serializeCookie: (name: string, value: string, opts: object) => string }).serializeCookie;
  return [...pending.values()].map((cookie) => serialize(cookie.name, cookie.value, cookie.opts));
}

/** Whether a request is a WebSocket upgrade (Node's parser marks those it hands to the 'upgrade' event). */
export function isUpgrade(request: FastifyRequest): boolean {
  return (request.raw as { upgrade?: boolean }).upgrade === true;
}

/** When the token a credential carries expires (epoch ms), if it says. */
function expiryOf(credential: Credential | undefined): number | undefined {
  if (!credential) return undefined;
  const token = (credential as { token?: ApiToken }).token;
  if (token) return token.expiresAt;
  return (credential as { session?: LoadedSession }).session?.record.accessTokenExpiresAt;
}
