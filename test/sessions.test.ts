/**
 * Sessions a user and an operator can see and end, and every tab told at once: two replicas
 * sharing a real Redis, the real provider, a user signed in from two browsers and a second
 * user; `GET /auth/sessions`, `DELETE /auth/sessions/{id}`, `GET /auth/events` read over
 * real HTTP from the other replica, and the operator's revoke on the metrics listener.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { Redis } from 'ioredis';
import { isTokenActive, startProvider, type TestProvider } from './support/provider.js';
import { startIntrospectingUpstream, type Upstream } from './support/upstream.js';
import { REDIRECT_URI, SECRET, startBff, TestBrowser, type TestBff } from './support/bff.js';
import { redisServerInstalled, startRedisServer, uniquePrefix, warnRedisSkipped, type RedisServer } from './support/redis.js';
import { postLogoutToken, signLogoutToken } from './support/logout-token.js';
import { Sealer } from '../src/state/sealer.js';
import type { SessionRecord } from '../src/state/record.js';

const SESSION = '__Host-th_session';
const ADMIN_TOKEN = 'admin-token-admin-token-admin-token-0001';
const FIREFOX = 'Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0';
const CHROME_ANDROID = 'Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Mobile Safari/537.36';
const IDLE_TIMEOUT_SECONDS = 600;

const hasRedis = redisServerInstalled();
if (!hasRedis) warnRedisSkipped('test/sessions.test.ts');

let provider: TestProvider;
let upstream: Upstream;
let redisServer: RedisServer;
const clock = { offsetMs: 0 };
const now = () => Date.now() + clock.offsetMs;
const started: TestBff[] = [];
/** Event latency across replicas, for the record (README "Sessions and events"). */
const latencies: number[] = [];

interface Replica {
  bff: TestBff;
  app: FastifyInstance;
  /** http://127.0.0.1:port of the main listener. */
  base: string;
  /** http://127.0.0.1:port of the metrics listener. */
  metricsBase: string;
}

async function replicas(store: 'redis' | 'cookie', count = 2, idp: { provider: TestProvider; upstream: Upstream } = { provider, upstream }): Promise<Replica[]> {
  const keyPrefix = uniquePrefix();
  const list: Replica[] = [];
  for (let i = 0; i < count; i++) {
    const bff = await startBff(
      {
        oidc: { issuer: idp.provider.issuer, clientId: idp.provider.clients.basic.clientId, clientSecret: idp.provider.clients.basic.clientSecret },
        session: { store, secrets: [SECRET], idleTimeoutSeconds: IDLE_TIMEOUT_SECONDS, redis: { url: redisServer.url, keyPrefix } },
        routes: [{ prefix: '/api', upstream: idp.upstream.url }],
        metrics: { onMainListener: false, port: 0 },
        admin: { token: ADMIN_TOKEN },
      },
      { now },
    );
    started.push(bff);
    const base = await bff.app.listen({ host: '127.0.0.1', port: 0 });
    // The metrics listener starts beside the main one (an onListen hook), and says where.
    await expect.poll(() => bff.logs.some((line) => line.msg === 'metrics served on a separate port'), { timeout: 5000 }).toBe(true);
    const metricsLine = bff.logs.find((line) => line.msg === 'metrics served on a separate port');
    await expect.poll(async () => (await bff.app.inject({ method: 'GET', url: '/readyz' })).statusCode, { timeout: 5000 }).toBe(200);
    list.push({ bff, app: bff.app, base, metricsBase: `http://127.0.0.1:${String(metricsLine?.port)}` });
  }
  return list;
}

/** A browser signed in through one replica, with its own User-Agent. */
async function signIn(app: FastifyInstance, login: string, userAgent: string): Promise<TestBrowser> {
  const browser = new TestBrowser(app);
  const start = await browser.request('/auth/login', { csrf: false, headers: { 'user-agent': userAgent } });
  const { completeProviderLogin } = await import('./support/browser.js');
  const callbackUrl = await completeProviderLogin(String(start.headers.location), { login });
  const url = new URL(callbackUrl);
  const callback = await browser.request(`${url.pathname}${url.search}`, { csrf: false, headers: { 'user-agent': userAgent } });
  expect(callback.statusCode).toBe(302);
  return browser;
}

/** The same browser's requests on another replica. */
function on(app: FastifyInstance, browser: TestBrowser, url: string, options: { method?: 'GET' | 'POST' | 'DELETE'; csrf?: boolean } = {}): Promise<LightMyRequestResponse> {
  return app.inject({
    method: options.method ?? 'GET',
    url,
    headers: { cookie: browser.cookieHeader(), ...(options.csrf === false ? {} : { 'x-csrf': '1' }) },
  });
}

interface ServerEvent {
  event: string;
  data: Record<string, unknown>;
  at: number;
}

/** An `EventSource` as a test sees it: events as they arrive over real HTTP. */
async function openEvents(base: string, browser: TestBrowser) {
  const controller = new AbortController();
  const response = await fetch(`${base}/auth/events`, { headers: { cookie: browser.cookieHeader(), accept: 'text/event-stream' }, signal: controller.signal });
  const events: ServerEvent[] = [];
  let closed = false;
  const reading = (async () => {
    if (!response.body) return;
    const decoder = new TextDecoder();
    let buffer = '';
    try {
      for await (const chunk of response.body) {
        buffer += decoder.decode(chunk as Uint8Array, { stream: true });
        let end: number;
        while ((end = buffer.indexOf('\n\n')) !== -1) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const event = /^event: (.*)$/m.exec(block)?.[1];
          const data = /^data: (.*)$/m.exec(block)?.[1];
          if (event && data) events.push({ event, data: JSON.parse(data) as Record<string, unknown>, at: Date.now() });
        }
      }
    } catch {
      // Aborted by the test.
    }
    closed = true;
  })();
  return {
    status: response.status,
    contentType: response.headers.get('content-type'),
    events,
    get closed() {
      return closed;
    },
    async next(name: string, timeoutMs = 2000): Promise<ServerEvent> {
      await expect.poll(() => events.find((e) => e.event === name), { timeout: timeoutMs, interval: 10 }).toBeDefined();
      return events.find((e) => e.event === name)!;
    },
    async close() {
      controller.abort();
      await reading;
    },
  };
}

async function refreshTokenOf(replica: Replica, browser: TestBrowser): Promise<string> {
  const { Redis } = await import('ioredis');
  const redis = new Redis(redisServer.url);
  try {
    const pointer = await new Sealer([SECRET]).unseal<{ sid: string }>(browser.cookies.get(SESSION)!);
    const keys = await redis.keys(`${replica.bff.config.session.redis!.keyPrefix}*${pointer!.sid}*`);
    const sealed = await redis.hget(keys[0]!, 'd');
    return (await new Sealer([SECRET]).unseal<SessionRecord>(sealed!))!.refreshToken!;
  } finally {
    redis.disconnect();
  }
}

beforeAll(async () => {
  if (!hasRedis) return;
  provider = await startProvider({ redirectUris: [REDIRECT_URI], backchannelLogoutUri: 'http://127.0.0.1:9/never-called' });
  upstream = await startIntrospectingUpstream(provider);
  redisServer = await startRedisServer();
});

afterAll(async () => {
  if (!hasRedis) return;
  for (const bff of started) await bff.app.close();
  await upstream.close();
  await provider.stop();
  await redisServer.stop();
  if (latencies.length > 0) {
    const sorted = [...latencies].sort((a, b) => a - b);
    console.log(`session events across replicas: ${sorted.length} events, latency median ${sorted[Math.floor(sorted.length / 2)]} ms, max ${sorted.at(-1)} ms`);
  }
});

describe.runIf(hasRedis)('GET and DELETE /auth/sessions', () => {
  it("lists the user's sessions from every browser, newest first, with a coarse user agent and the current one marked", async () => {
    const [a, b] = await replicas('redis');
    const laptop = await signIn(a!.app, 'list-user', FIREFOX);
    const phone = await signIn(b!.app, 'list-user', CHROME_ANDROID);
    await signIn(a!.app, 'someone-else', FIREFOX);
    const response = await on(b!.app, laptop, '/auth/sessions', { csrf: false });
    expect(response.statusCode).toBe(200);
    const list = response.json<Array<{ id: string; current: boolean; userAgent: string; createdAt: string; lastSeenAt: string }>>();
    expect(list).toHaveLength(2);
    expect(list.find((s) => s.current)?.userAgent).toBe('Firefox on Windows');
    expect(list.find((s) => !s.current)?.userAgent).toBe('Chrome on Android');
    for (const entry of list) expect(entry.id).toMatch(/^[A-Za-z0-9_-]{22}$/);
    // No handle is anything the cookie carries.
    expect(response.body).not.toContain(laptop.cookies.get(SESSION)!);
    expect(response.body).not.toContain(phone.cookies.get(SESSION)!);
  });

  it('ends another of the user\'s sessions: its cookie is refused on every replica and its refresh token revoked', async () => {
    const [a, b] = await replicas('redis');
    const laptop = await signIn(a!.app, 'end-other', FIREFOX);
    const phone = await signIn(a!.app, 'end-other', CHROME_ANDROID);
    const phoneRefreshToken = await refreshTokenOf(a!, phone);
    const other = (await on(b!.app, laptop, '/auth/sessions', { csrf: false })).json<Array<{ id: string; current: boolean }>>().find((s) => !s.current)!;
    const ended = await on(b!.app, laptop, `/auth/sessions/${other.id}`, { method: 'DELETE' });
    expect(ended.statusCode).toBe(204);
    for (const replica of [a!, b!]) expect((await on(replica.app, phone, '/api/x')).statusCode).toBe(401);
    expect(await isTokenActive(provider, phoneRefreshToken)).toBe(false);
    expect((await on(a!.app, laptop, '/api/x')).statusCode).toBe(200);
  });

  it("answers 404 for an id that is not one of the user's sessions", async () => {
    const [a] = await replicas('redis', 1);
    const mine = await signIn(a!.app, 'owner', FIREFOX);
    const theirs = await signIn(a!.app, 'stranger', FIREFOX);
    const theirId = (await on(a!.app, theirs, '/auth/sessions', { csrf: false })).json<Array<{ id: string }>>()[0]!.id;
    const response = await on(a!.app, mine, `/auth/sessions/${theirId}`, { method: 'DELETE' });
    expect(response.statusCode).toBe(404);
    expect(response.json().error).toBe('not_found');
    expect((await on(a!.app, theirs, '/api/x')).statusCode).toBe(200);
  });

  it('refuses DELETE without the CSRF header (403) and ends nothing', async () => {
    const [a] = await replicas('redis', 1);
    const browser = await signIn(a!.app, 'csrf-user', FIREFOX);
    const id = (await on(a!.app, browser, '/auth/sessions', { csrf: false })).json<Array<{ id: string }>>()[0]!.id;
    const response = await on(a!.app, browser, `/auth/sessions/${id}`, { method: 'DELETE', csrf: false });
    expect(response.statusCode).toBe(403);
    expect((await on(a!.app, browser, '/api/x')).statusCode).toBe(200);
  });

  it('answers 501 not_supported with the cookie store', async () => {
    const [a] = await replicas('cookie', 1);
    const browser = await signIn(a!.app, 'cookie-user', FIREFOX);
    const response = await on(a!.app, browser, '/auth/sessions', { csrf: false });
    expect(response.statusCode).toBe(501);
    expect(response.json().error).toBe('not_supported');
  });
});

describe.runIf(hasRedis)('GET /auth/events on the other replica', () => {
  it('is an event stream that tells of a refresh done on the other replica within 2 s', async () => {
    const [a, b] = await replicas('redis');
    const browser = await signIn(a!.app, 'events-refresh', FIREFOX);
    const stream = await openEvents(b!.base, browser);
    expect(stream.status).toBe(200);
    expect(stream.contentType).toMatch(/^text\/event-stream/);
    const sentAt = Date.now();
    expect((await on(a!.app, browser, '/auth/refresh', { method: 'POST' })).statusCode).toBe(200);
    const event = await stream.next('session-refreshed');
    latencies.push(event.at - sentAt);
    expect(Date.parse(String(event.data.accessTokenExpiresAt))).toBeGreaterThan(Date.now());
    await stream.close();
  });

  it.each<[string, (ctx: { a: Replica; b: Replica; browser: TestBrowser }) => Promise<void>, string]>([
    ['a logout on the other replica', async ({ a, browser }) => void (await on(a.app, browser, '/auth/logout', { method: 'POST' })), 'logout'],
    [
      "the provider's back-channel logout",
      async ({ a, browser }) => {
        const sid = (await on(a.app, browser, '/auth/user', { csrf: false })).json<{ claims: { sid: string } }>().claims.sid;
        const iat = Math.floor(now() / 1000);
        expect((await postLogoutToken(a.app, await signLogoutToken(provider, { sid, iat, exp: iat + 120 }))).statusCode).toBe(200);
      },
      'backchannel',
    ],
    [
      'a refresh the provider refuses (grant revoked)',
      async ({ a, browser }) => {
        await provider.revokeGrantsOf(String((await on(a.app, browser, '/auth/user', { csrf: false })).json<{ claims: { sub: string } }>().claims.sub));
        expect((await on(a.app, browser, '/auth/refresh', { method: 'POST' })).statusCode).toBe(401);
      },
      'revoked',
    ],
    [
      'another of its sessions ending it',
      async ({ a, browser }) => {
        const sub = (await on(a.app, browser, '/auth/user', { csrf: false })).json<{ claims: { sub: string } }>().claims.sub;
        const other = await signIn(a.app, sub, CHROME_ANDROID);
        const target = (await on(a.app, other, '/auth/sessions', { csrf: false })).json<Array<{ id: string; current: boolean }>>().find((s) => !s.current)!;
        expect((await on(a.app, other, `/auth/sessions/${target.id}`, { method: 'DELETE' })).statusCode).toBe(204);
      },
      'ended-elsewhere',
    ],
  ])('sends session-ended after %s, within 2 s, and closes the stream', async (_how, end, reason) => {
    const [a, b] = await replicas('redis');
    const browser = await signIn(a!.app, `events-end-${reason}`, FIREFOX);
    const stream = await openEvents(b!.base, browser);
    const sentAt = Date.now();
    await end({ a: a!, b: b!, browser });
    const event = await stream.next('session-ended');
    latencies.push(event.at - sentAt);
    expect(event.data.reason).toBe(reason);
    await expect.poll(() => stream.closed, { timeout: 2000 }).toBe(true);
  });

  it('warns a minute before the idle timeout, then ends the stream with reason timeout', async () => {
    const [a] = await replicas('redis', 1);
    const browser = await signIn(a!.app, 'events-idle', FIREFOX);
    const stream = await openEvents(a!.base, browser);
    clock.offsetMs += (IDLE_TIMEOUT_SECONDS - 30) * 1000;
    try {
      const expiring = await stream.next('session-expiring', 3000);
      expect(Date.parse(String(expiring.data.idleExpiresAt))).toBeGreaterThan(now());
      clock.offsetMs += 60_000;
      expect((await stream.next('session-ended', 3000)).data.reason).toBe('timeout');
    } finally {
      clock.offsetMs = 0;
      await stream.close();
    }
  });

  it('does not warn a stream on one replica of an idle end that a call through another replica moved, and warns before the new one', async () => {
    // Tokens outlive the test: no refresh (and its broadcast signal) tells replica b of the use; only the store does.
    const longTokens = await startProvider({ redirectUris: [REDIRECT_URI], accessTokenTtlSeconds: 7200 });
    const itsUpstream = await startIntrospectingUpstream(longTokens);
    const redis = new Redis(redisServer.url);
    const publishes = async () => Number(/cmdstat_publish:calls=(\d+)/.exec(await redis.info('commandstats'))?.[1] ?? 0);
    try {
      const [a, b] = await replicas('redis', 2, { provider: longTokens, upstream: itsUpstream });
      const browser = await signIn(a!.app, 'events-slid-elsewhere', FIREFOX);
      const signedInAt = now();
      const stream = await openEvents(b!.base, browser);
      clock.offsetMs += (IDLE_TIMEOUT_SECONDS - 120) * 1000;
      const before = await publishes();
      expect((await on(a!.app, browser, '/api/used-on-a')).statusCode).toBe(200);
      const usedAt = now();
      // The slide is in the store, not broadcast.
      expect(await publishes()).toBe(before);
      // By b's own view the idle end is 30 s away: it asks the store, which knows better.
      clock.offsetMs += 90_000;
      await new Promise((resolve) => setTimeout(resolve, 2500));
      expect(stream.events.map((e) => e.event)).not.toContain('session-expiring');
      expect(stream.closed).toBe(false);
      clock.offsetMs += (IDLE_TIMEOUT_SECONDS - 120) * 1000;
      const expiring = await stream.next('session-expiring', 3000);
      expect(Date.parse(String(expiring.data.idleExpiresAt))).toBeGreaterThanOrEqual(usedAt + IDLE_TIMEOUT_SECONDS * 1000 - 1000);
      expect(Date.parse(String(expiring.data.idleExpiresAt))).toBeGreaterThan(signedInAt + IDLE_TIMEOUT_SECONDS * 1000);
      await stream.close();
    } finally {
      clock.offsetMs = 0;
      redis.disconnect();
      await itsUpstream.close();
      await longTokens.stop();
    }
  });

  it('refuses a stream without a session (401) and more than five streams of one session (429)', async () => {
    const [a] = await replicas('redis', 1);
    expect((await fetch(`${a!.base}/auth/events`)).status).toBe(401);
    const browser = await signIn(a!.app, 'events-many', FIREFOX);
    const streams = [];
    for (let i = 0; i < 5; i++) streams.push(await openEvents(a!.base, browser));
    expect(streams.every((s) => s.status === 200)).toBe(true);
    const sixth = await openEvents(a!.base, browser);
    expect(sixth.status).toBe(429);
    for (const stream of [...streams, sixth]) await stream.close();
  });
});

describe.runIf(hasRedis)('POST /admin/sessions/revoke on the metrics listener', () => {
  const revoke = (replica: Replica, body: unknown, token?: string) =>
    fetch(`${replica.metricsBase}/admin/sessions/revoke`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: JSON.stringify(body),
    });

  it("ends every session of a user on every replica and revokes their refresh tokens, answering how many", async () => {
    const [a, b] = await replicas('redis');
    const first = await signIn(a!.app, 'compromised', FIREFOX);
    const second = await signIn(b!.app, 'compromised', CHROME_ANDROID);
    const bystander = await signIn(a!.app, 'bystander', FIREFOX);
    const refreshToken = await refreshTokenOf(a!, first);
    const response = await revoke(b!, { sub: 'compromised' }, ADMIN_TOKEN);
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ ended: 2 });
    for (const replica of [a!, b!]) {
      expect((await on(replica.app, first, '/api/x')).statusCode).toBe(401);
      expect((await on(replica.app, second, '/api/x')).statusCode).toBe(401);
    }
    expect(await isTokenActive(provider, refreshToken)).toBe(false);
    expect((await on(a!.app, bystander, '/api/x')).statusCode).toBe(200);
    expect(b!.bff.logs.some((l) => l.level === 40 && l.msg === 'admin: ending sessions' && typeof l.address === 'string')).toBe(true);
  });

  it.each([
    ['a wrong token', 'wrong-token-wrong-token-wrong-token-0001'],
    ['no token', undefined],
  ])('refuses %s with 401 and ends nothing', async (_name, token) => {
    const [a] = await replicas('redis', 1);
    const browser = await signIn(a!.app, 'admin-target', FIREFOX);
    const response = await revoke(a!, { sub: 'admin-target' }, token);
    expect(response.status).toBe(401);
    expect((await on(a!.app, browser, '/api/x')).statusCode).toBe(200);
  });

  it('is not served on the public listener (404)', async () => {
    const [a] = await replicas('redis', 1);
    const response = await fetch(`${a!.base}/admin/sessions/revoke`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${ADMIN_TOKEN}` },
      body: JSON.stringify({ sub: 'anyone' }),
    });
    expect(response.status).toBe(404);
  });
});
