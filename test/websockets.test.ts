/**
 * WebSockets and streams that live and die with the session (issue 20): the real provider,
 * a real `ws` upstream that checks the bearer token on the upgrade, token-handler listening
 * on a real port, and browsers as `ws` clients carrying the session cookie and an Origin.
 * Two replicas sharing a real Redis for the cross-replica close (skipped loudly without
 * redis-server). Close latencies are printed at the end.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { IncomingHttpHeaders } from 'node:http';
import type { FastifyInstance } from 'fastify';
import { WebSocket } from 'ws';
import { startProvider, type TestProvider } from './support/provider.js';
import { startIntrospectingUpstream, type Upstream } from './support/upstream.js';
import { startWsUpstream, type WsUpstream } from './support/ws-upstream.js';
import { PUBLIC_URL, REDIRECT_URI, SECRET, startBff, TestBrowser, type TestBff } from './support/bff.js';
import { redisServerInstalled, startRedisServer, uniquePrefix, warnRedisSkipped, type RedisServer } from './support/redis.js';
import { postLogoutToken, signLogoutToken } from './support/logout-token.js';

const IDLE_TIMEOUT_SECONDS = 600;
const ORIGIN = PUBLIC_URL;

let provider: TestProvider;
let wsUpstream: WsUpstream;
let upstream: Upstream;
const clock = { offsetMs: 0 };
const now = () => Date.now() + clock.offsetMs;
const started: TestBff[] = [];
/** Time from the call that ended the session to the browser's socket closed, by how it ended. */
const latencies: Array<[string, number]> = [];

interface Served {
  bff: TestBff;
  app: FastifyInstance;
  /** ws://127.0.0.1:port */
  ws: string;
  /** http://127.0.0.1:port */
  http: string;
}

async function serve(extra: { route?: Record<string, unknown>; session?: Record<string, unknown> } = {}): Promise<Served> {
  const bff = await startBff(
    {
      oidc: { issuer: provider.issuer, clientId: provider.clients.basic.clientId, clientSecret: provider.clients.basic.clientSecret },
      session: { store: 'memory', secrets: [SECRET], idleTimeoutSeconds: IDLE_TIMEOUT_SECONDS, ...extra.session },
      routes: [
        { prefix: '/api/live', upstream: wsUpstream.url, websocket: true, ...extra.route },
        { prefix: '/api', upstream: upstream.url },
      ],
    },
    { now },
  );
  started.push(bff);
  const http = await bff.app.listen({ host: '127.0.0.1', port: 0 });
  return { bff, app: bff.app, ws: http.replace(/^http/, 'ws'), http };
}

async function signIn(app: FastifyInstance, login: string): Promise<TestBrowser> {
  const browser = new TestBrowser(app);
  expect((await browser.login({ login })).statusCode).toBe(302);
  return browser;
}

interface Closed {
  code: number;
  reason: string;
  at: number;
}

interface OpenSocket {
  ws: WebSocket;
  /** The headers of the 101 answer. */
  headers: IncomingHttpHeaders;
  pings: number;
  messages: string[];
  closed: Promise<Closed>;
  next(): Promise<string>;
}

/** A browser's WebSocket: resolves once open, or rejects with the HTTP answer the upgrade got. */
function openSocket(url: string, requestHeaders: Record<string, string>): Promise<OpenSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, undefined, { headers: requestHeaders });
    const messages: string[] = [];
    const waiting: Array<(message: string) => void> = [];
    ws.on('message', (data) => {
      const text = data.toString();
      const waiter = waiting.shift();
      if (waiter) waiter(text);
      else messages.push(text);
    });
    const closed = new Promise<Closed>((done) => ws.on('close', (code, reason) => done({ code, reason: reason.toString(), at: Date.now() })));
    ws.on('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (chunk: Buffer) => (body += chunk.toString()));
      res.on('end', () => reject(Object.assign(new Error(`upgrade answered ${res.statusCode}`), { status: res.statusCode, body: body ? (JSON.parse(body) as Record<string, unknown>) : {}, headers: res.headers })));
    });
    ws.on('error', (err) => reject(err));
    let headers: IncomingHttpHeaders = {};
    ws.on('upgrade', (res) => (headers = res.headers));
    ws.on('open', () => {
      const socket: OpenSocket = {
        ws,
        headers,
        pings: 0,
        messages,
        closed,
        next: () => (messages.length > 0 ? Promise.resolve(messages.shift()!) : new Promise((done) => waiting.push(done))),
      };
      ws.on('ping', () => socket.pings++);
      resolve(socket);
    });
  });
}

function browserSocket(served: Served, browser: TestBrowser, path = '/api/live/echo', extra: Record<string, string> = {}): Promise<OpenSocket> {
  return openSocket(`${served.ws}${path}`, { cookie: browser.cookieHeader(), origin: ORIGIN, ...extra });
}

async function refused(promise: Promise<unknown>): Promise<{ status: number; body: Record<string, unknown> }> {
  try {
    await promise;
  } catch (err) {
    return err as { status: number; body: Record<string, unknown> };
  }
  throw new Error('the upgrade was not refused');
}

async function subOf(app: FastifyInstance, browser: TestBrowser): Promise<{ sub: string; sid: string }> {
  const claims = (await app.inject({ url: '/auth/user', headers: { cookie: browser.cookieHeader() } })).json<{ claims: { sub: string; sid: string } }>().claims;
  return claims;
}

/** Waits for the socket's close and records how long it took from `since`. */
async function closedWithin(socket: OpenSocket, since: number, label: string, ms = 2000): Promise<Closed> {
  const closed = await Promise.race([socket.closed, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`${label}: socket still open after ${ms} ms`)), ms))]);
  latencies.push([label, closed.at - since]);
  return closed;
}

beforeAll(async () => {
  provider = await startProvider({ redirectUris: [REDIRECT_URI], backchannelLogoutUri: 'http://127.0.0.1:9/never-called' });
  wsUpstream = await startWsUpstream(provider);
  upstream = await startIntrospectingUpstream(provider);
});

afterAll(async () => {
  for (const bff of started) await bff.app.close();
  await wsUpstream.close();
  await upstream.close();
  await provider.stop();
  if (latencies.length > 0) {
    const lines = latencies.map(([label, ms]) => `  ${label}: ${ms} ms`).join('\n');
    const sorted = latencies.map(([, ms]) => ms).sort((a, b) => a - b);
    console.log(`WebSocket/stream close latency after the session ended (${sorted.length} closes, median ${sorted[Math.floor(sorted.length / 2)]} ms, max ${sorted.at(-1)} ms):\n${lines}`);
  }
});

describe('WebSocket upgrades on an API route', () => {
  it("passes messages both ways; the upstream upgrade carries the route's token, never our cookie or the browser's Authorization", async () => {
    const served = await serve();
    const browser = await signIn(served.app, 'ws-open');
    const before = wsUpstream.upgrades.length;
    const socket = await browserSocket(served, browser, '/api/live/hello?room=1', {
      cookie: `${browser.cookieHeader()}; theme=dark`,
      authorization: 'Bearer forged-by-the-page',
      'x-csrf': '1',
    });
    const { sub } = await subOf(served.app, browser);
    expect(JSON.parse(await socket.next())).toEqual({ hello: sub });
    socket.ws.send('ping 1');
    expect(await socket.next()).toBe('ping 1');
    socket.ws.send(Buffer.from('binary'));
    expect(await socket.next()).toBe('binary');
    const upgrade = wsUpstream.upgrades.at(-1)!;
    expect(wsUpstream.upgrades.length).toBe(before + 1);
    expect(upgrade.path).toBe('/hello?room=1');
    expect(upgrade.tokenActive).toBe(true);
    expect(upgrade.sub).toBe(sub);
    expect(upgrade.headers.authorization).not.toContain('forged');
    expect(upgrade.headers.cookie).toBe('theme=dark');
    expect(upgrade.headers['x-csrf']).toBeUndefined();
    expect(upgrade.headers['x-forwarded-host']).toBe(new URL(PUBLIC_URL).host);
    expect(upgrade.headers['x-request-id']).toBeTruthy();
    socket.ws.close(1000);
    const closed = await socket.closed;
    expect(closed.code).toBe(1000);
    await expect.poll(() => upgrade.closed?.code, { timeout: 2000 }).toBe(1000);
    // One log line per socket at close, with its duration and byte counts.
    await expect
      .poll(() => served.bff.logs.find((line) => line.msg === 'websocket closed'), { timeout: 2000 })
      .toMatchObject({ route: '/api/live', closedBy: 'browser', messagesIn: 2, messagesOut: 3, bytesIn: 12, durationMs: expect.any(Number) });
  });

  it('refuses an upgrade without a session (401 login_required), from a foreign Origin or without one (403 csrf_failed), as JSON', async () => {
    const served = await serve();
    const browser = await signIn(served.app, 'ws-refused');
    const before = wsUpstream.upgrades.length;
    const noSession = await refused(openSocket(`${served.ws}/api/live/echo`, { origin: ORIGIN }));
    expect(noSession.status).toBe(401);
    expect(noSession.body).toMatchObject({ error: 'login_required' });
    const foreign = await refused(browserSocket(served, browser, '/api/live/echo', { origin: 'https://evil.example' }));
    expect(foreign.status).toBe(403);
    expect(foreign.body).toMatchObject({ error: 'csrf_failed' });
    const missing = await refused(openSocket(`${served.ws}/api/live/echo`, { cookie: browser.cookieHeader() }));
    expect(missing.status).toBe(403);
    expect(missing.body).toMatchObject({ error: 'csrf_failed' });
    expect(wsUpstream.upgrades.length).toBe(before);
  });

  it('accepts an Origin listed in csrf.allowedOrigins', async () => {
    const bff = await startBff(
      {
        oidc: { issuer: provider.issuer, clientId: provider.clients.basic.clientId, clientSecret: provider.clients.basic.clientSecret },
        session: { store: 'memory', secrets: [SECRET] },
        csrf: { allowedOrigins: ['https://admin.example.test'] },
        routes: [{ prefix: '/api/live', upstream: wsUpstream.url, websocket: true }],
      },
      { now },
    );
    started.push(bff);
    const http = await bff.app.listen({ host: '127.0.0.1', port: 0 });
    const served = { bff, app: bff.app, http, ws: http.replace(/^http/, 'ws') };
    const browser = await signIn(bff.app, 'ws-allowed');
    const socket = await browserSocket(served, browser, '/api/live/echo', { origin: 'https://admin.example.test' });
    socket.ws.send('hi');
    expect(await socket.next()).toBe('hi');
    socket.ws.close();
  });
});

describe('sockets end with their session (4401 session_ended within 2 s, upstream closed too)', () => {
  it.each<[string, (ctx: { served: Served; browser: TestBrowser }) => Promise<void>]>([
    ['logout', async ({ served, browser }) => void expect((await browser.request('/auth/logout', { method: 'POST' })).statusCode).toBeLessThan(400)],
    [
      'back-channel logout',
      async ({ served, browser }) => {
        const { sid } = await subOf(served.app, browser);
        const iat = Math.floor(Date.now() / 1000);
        expect((await postLogoutToken(served.app, await signLogoutToken(provider, { sid, iat, exp: iat + 120 }))).statusCode).toBe(200);
      },
    ],
    [
      'DELETE /auth/sessions/{id} from another session',
      async ({ served, browser }) => {
        const { sub } = await subOf(served.app, browser);
        const other = await signIn(served.app, sub);
        const target = (await other.request('/auth/sessions', { csrf: false })).json<Array<{ id: string; current: boolean }>>().find((s) => !s.current)!;
        expect((await other.request(`/auth/sessions/${target.id}`, { method: 'DELETE' })).statusCode).toBe(204);
      },
    ],
    [
      'a refresh the provider refuses (invalid_grant)',
      async ({ served, browser }) => {
        await provider.revokeGrantsOf((await subOf(served.app, browser)).sub);
        expect((await browser.request('/auth/refresh', { method: 'POST' })).statusCode).toBe(401);
      },
    ],
  ])('after %s', async (how, end) => {
    const served = await serve();
    const browser = await signIn(served.app, `ws-end-${how.split(' ')[0]}`);
    const socket = await browserSocket(served, browser);
    const second = await browserSocket(served, browser, '/api/live/hello');
    // Both connected through to the upstream.
    socket.ws.send('first');
    expect(await socket.next()).toBe('first');
    expect(JSON.parse(await second.next())).toHaveProperty('hello');
    const upgrade = wsUpstream.upgrades.at(-1)!;
    const since = Date.now();
    await end({ served, browser });
    const closed = await closedWithin(socket, since, how);
    expect(closed).toMatchObject({ code: 4401, reason: 'session_ended' });
    expect(await closedWithin(second, since, `${how} (second socket)`)).toMatchObject({ code: 4401, reason: "session_ended" });
    await expect.poll(() => upgrade.closed?.code, { timeout: 2000 }).toBe(4401);
    await expect.poll(() => served.bff.logs.some((line) => line.msg === 'websocket closed' && line.closedBy === 'session_ended'), { timeout: 2000 }).toBe(true);
  });

  it('at the idle timeout: socket traffic does not count as use', async () => {
    const served = await serve();
    const browser = await signIn(served.app, 'ws-idle');
    const socket = await browserSocket(served, browser);
    socket.ws.send('busy');
    expect(await socket.next()).toBe('busy');
    clock.offsetMs += (IDLE_TIMEOUT_SECONDS + 1) * 1000;
    const since = Date.now();
    try {
      expect((await closedWithin(socket, since, 'idle timeout', 2500)).code).toBe(4401);
    } finally {
      clock.offsetMs = 0;
    }
  });

  it('a session still in use keeps its socket: an HTTP call slides the idle timeout the registry sees', async () => {
    const served = await serve();
    const browser = await signIn(served.app, 'ws-slide');
    const socket = await browserSocket(served, browser);
    clock.offsetMs += (IDLE_TIMEOUT_SECONDS - 60) * 1000;
    try {
      expect((await browser.request('/api/anything')).statusCode).toBe(200);
      clock.offsetMs += 120 * 1000;
      await new Promise((resolve) => setTimeout(resolve, 1500));
      socket.ws.send('still here');
      expect(await socket.next()).toBe('still here');
    } finally {
      clock.offsetMs = 0;
      socket.ws.close();
    }
  });
});

describe('a socket ended while its upstream was still answering the upgrade', () => {
  it('gets 4401 at once, and the upstream socket is closed as soon as it opens', async () => {
    const served = await serve();
    const browser = await signIn(served.app, 'ws-early');
    const socket = await browserSocket(served, browser, '/api/live/slow?ms=500');
    // The upstream has checked the token and waits before its 101: the session ends now.
    await expect.poll(() => wsUpstream.upgrades.find((u) => u.sub === 'ws-early'), { timeout: 2000, interval: 5 }).toBeDefined();
    const upgrade = wsUpstream.upgrades.find((u) => u.sub === 'ws-early')!;
    const since = Date.now();
    expect((await browser.request('/auth/logout', { method: 'POST' })).statusCode).toBeLessThan(400);
    expect(await closedWithin(socket, since, 'logout while the upstream was connecting')).toMatchObject({ code: 4401, reason: 'session_ended' });
    await expect.poll(() => upgrade.closed?.code, { timeout: 2000 }).toBe(4401);
  });
});

describe('the token on the upgrade', () => {
  it('is refreshed first when due; with the cookie store the 101 answer carries the new session cookie', async () => {
    const served = await serve({ session: { store: 'cookie' } });
    const browser = await signIn(served.app, 'ws-refresh');
    const first = await browserSocket(served, browser);
    first.ws.send('one');
    await first.next();
    const firstToken = wsUpstream.upgrades.at(-1)!.headers.authorization;
    const cookieBefore = browser.cookieHeader();
    clock.offsetMs += 59_000;
    try {
      const second = await browserSocket(served, browser);
      second.ws.send('two');
      expect(await second.next()).toBe('two');
      const upgrade = wsUpstream.upgrades.at(-1)!;
      expect(upgrade.tokenActive).toBe(true);
      expect(upgrade.headers.authorization).not.toBe(firstToken);
      const setCookie = ([] as string[]).concat(second.headers['set-cookie'] ?? []);
      expect(setCookie.some((c) => c.startsWith('__Host-th_session='))).toBe(true);
      expect(setCookie.join()).not.toContain(cookieBefore);
      first.ws.close();
      second.ws.close();
    } finally {
      clock.offsetMs = 0;
    }
  });

  it('closeOnTokenExpiry: the socket closes with 4001 token_expired when the token it was opened with expires', async () => {
    const served = await serve({ route: { closeOnTokenExpiry: true } });
    const browser = await signIn(served.app, 'ws-expiry');
    const socket = await browserSocket(served, browser);
    socket.ws.send('x');
    await socket.next();
    const upgrade = wsUpstream.upgrades.at(-1)!;
    clock.offsetMs += 61_000;
    try {
      expect(await closedWithin(socket, Date.now(), 'token expiry (tick)', 2500)).toMatchObject({ code: 4001, reason: 'token_expired' });
      await expect.poll(() => upgrade.closed?.code, { timeout: 2000 }).toBe(4001);
    } finally {
      clock.offsetMs = 0;
    }
  });
});

describe('limits, keep-alive, metrics and shutdown', () => {
  it('refuses more sockets per session than session.maxWebSockets (429), and closes on a message larger than websocketMaxMessageBytes (1009)', async () => {
    const served = await serve({ session: { maxWebSockets: 2 }, route: { websocketMaxMessageBytes: 1024 } });
    const browser = await signIn(served.app, 'ws-limits');
    const a = await browserSocket(served, browser);
    const b = await browserSocket(served, browser);
    const third = await refused(browserSocket(served, browser));
    expect(third.status).toBe(429);
    expect(third.body).toMatchObject({ error: 'too_many_requests' });
    a.ws.send('x'.repeat(1024));
    expect((await a.next()).length).toBe(1024);
    a.ws.send('x'.repeat(2048));
    expect((await a.closed).code).toBe(1009);
    // A socket closed frees its place.
    const again = await browserSocket(served, browser);
    again.ws.close();
    b.ws.close();
  });

  it("outlives the server's request, headers and connection timeouts (they are for HTTP requests)", async () => {
    const bff = await startBff(
      {
        oidc: { issuer: provider.issuer, clientId: provider.clients.basic.clientId, clientSecret: provider.clients.basic.clientSecret },
        session: { store: 'memory', secrets: [SECRET] },
        limits: { requestTimeoutMs: 1000, headersTimeoutMs: 500, keepAliveTimeoutMs: 500, connectionTimeoutMs: 1000 },
        routes: [{ prefix: '/api/live', upstream: wsUpstream.url, websocket: true, websocketPingSeconds: 0 }],
      },
      { now },
    );
    started.push(bff);
    const http = await bff.app.listen({ host: '127.0.0.1', port: 0 });
    const browser = await signIn(bff.app, 'ws-timeouts');
    const socket = await browserSocket({ bff, app: bff.app, http, ws: http.replace(/^http/, 'ws') }, browser);
    await new Promise((resolve) => setTimeout(resolve, 2500));
    socket.ws.send('after the timeouts');
    expect(await socket.next()).toBe('after the timeouts');
    socket.ws.close();
  });

  it('pings the browser every websocketPingSeconds', async () => {
    const served = await serve({ route: { websocketPingSeconds: 1 } });
    const browser = await signIn(served.app, 'ws-ping');
    const socket = await browserSocket(served, browser);
    await expect.poll(() => socket.pings, { timeout: 3500 }).toBeGreaterThanOrEqual(2);
    socket.ws.send('alive');
    expect(await socket.next()).toBe('alive');
    socket.ws.close();
  });

  it('counts open sockets, messages and closes by reason', async () => {
    const served = await serve();
    const browser = await signIn(served.app, 'ws-metrics');
    const socket = await browserSocket(served, browser);
    socket.ws.send('m');
    await socket.next();
    const open = (await served.app.inject({ url: '/metrics' })).body;
    expect(open).toMatch(/token_handler_websockets_open\{route="\/api\/live",app="default"\} 1/);
    expect(open).toMatch(/token_handler_websocket_messages_total\{route="\/api\/live",direction="in",app="default"\} 1/);
    expect((await browser.request('/auth/logout', { method: 'POST' })).statusCode).toBeLessThan(400);
    await socket.closed;
    await expect
      .poll(async () => (await served.app.inject({ url: '/metrics' })).body, { timeout: 2000 })
      .toMatch(/token_handler_websocket_closes_total\{route="\/api\/live",reason="session_ended",app="default"\} 1/);
    expect((await served.app.inject({ url: '/metrics' })).body).toMatch(/token_handler_websockets_open\{route="\/api\/live",app="default"\} 0/);
  });

  it('closes every socket with 1001 going_away when the server shuts down', async () => {
    const served = await serve();
    const browser = await signIn(served.app, 'ws-shutdown');
    const socket = await browserSocket(served, browser);
    socket.ws.send('m');
    await socket.next();
    const upgrade = wsUpstream.upgrades.at(-1)!;
    await served.app.close();
    expect(await socket.closed).toMatchObject({ code: 1001, reason: 'going_away' });
    await expect.poll(() => upgrade.closed?.code, { timeout: 2000 }).toBe(1001);
  });
});

describe('streams end with their session', () => {
  it('a chunked response through an API route is cut off within 2 s of the logout', async () => {
    const served = await serve();
    const browser = await signIn(served.app, 'stream-logout');
    const response = await fetch(`${served.http}/api/drip?chunks=100&ms=100`, { headers: { cookie: browser.cookieHeader(), 'x-csrf': '1' } });
    expect(response.status).toBe(200);
    const reader = response.body!.getReader();
    await reader.read();
    const since = Date.now();
    expect((await browser.request('/auth/logout', { method: 'POST' })).statusCode).toBeLessThan(400);
    const ended = (async () => {
      try {
        for (;;) if ((await reader.read()).done) return 'done';
      } catch {
        return 'cut off';
      }
    })();
    const how = await Promise.race([ended, new Promise<string>((resolve) => setTimeout(() => resolve('still streaming'), 2000))]);
    latencies.push(['stream after logout', Date.now() - since]);
    expect(how).toBe('cut off');
    await expect.poll(() => served.bff.logs.some((line) => line.msg === 'stream ended with its session'), { timeout: 2000 }).toBe(true);
  });
});

const hasRedis = redisServerInstalled();
if (!hasRedis) warnRedisSkipped('test/websockets.test.ts (two replicas)');

describe.runIf(hasRedis)('across replicas sharing Redis', () => {
  let redisServer: RedisServer;
  beforeAll(async () => {
    redisServer = await startRedisServer();
  });
  afterAll(async () => {
    await redisServer?.stop();
  });

  it.each(['logout', 'back-channel logout'])('closes a socket on the other replica with 4401 within 2 s after a %s', async (how) => {
    const keyPrefix = uniquePrefix();
    const replicas: Served[] = [];
    for (let i = 0; i < 2; i++) {
      const bff = await startBff(
        {
          oidc: { issuer: provider.issuer, clientId: provider.clients.basic.clientId, clientSecret: provider.clients.basic.clientSecret },
          session: { store: 'redis', secrets: [SECRET], redis: { url: redisServer.url, keyPrefix } },
          routes: [{ prefix: '/api/live', upstream: wsUpstream.url, websocket: true }],
        },
        { now },
      );
      started.push(bff);
      const http = await bff.app.listen({ host: '127.0.0.1', port: 0 });
      replicas.push({ bff, app: bff.app, http, ws: http.replace(/^http/, 'ws') });
    }
    const [a, b] = replicas as [Served, Served];
    const browser = await signIn(a.app, `ws-replicas-${how.split(' ')[0]}`);
    const socket = await browserSocket(b, browser);
    socket.ws.send('on b');
    expect(await socket.next()).toBe('on b');
    const upgrade = wsUpstream.upgrades.at(-1)!;
    const since = Date.now();
    if (how === 'logout') {
      expect((await browser.request('/auth/logout', { method: 'POST' })).statusCode).toBeLessThan(400);
    } else {
      const { sid } = await subOf(a.app, browser);
      const iat = Math.floor(Date.now() / 1000);
      expect((await postLogoutToken(a.app, await signLogoutToken(provider, { sid, iat, exp: iat + 120 }))).statusCode).toBe(200);
    }
    expect(await closedWithin(socket, since, `${how} on the other replica`)).toMatchObject({ code: 4401, reason: 'session_ended' });
    await expect.poll(() => upgrade.closed?.code, { timeout: 2000 }).toBe(4401);
  });
});
