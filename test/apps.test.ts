/**
 * Several apps in one process (`apps:`): one token-handler with two apps on two hosts, in
 * front of two real oidc-provider instances and two introspecting upstreams (each accepts
 * only its own provider's tokens), with the cookie store and the Redis store.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { startProvider, type TestProvider } from './support/provider.js';
import { startIntrospectingUpstream, type Upstream } from './support/upstream.js';
import { completeProviderLogin } from './support/browser.js';
import { SECRET, startBff, TestBrowser, type TestBff } from './support/bff.js';
import { signLogoutToken } from './support/logout-token.js';
import { writeSpaBuild } from './support/spa.js';
import { WebSocket } from 'ws';
import { startWsUpstream } from './support/ws-upstream.js';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { get as httpGet } from 'node:http';
import { join } from 'node:path';
import { redisServerInstalled, startRedisServer, uniquePrefix, warnRedisSkipped, type RedisServer } from './support/redis.js';

const SHOP = 'shop.example.test';
const ADMIN = 'admin.example.test';
const PORTAL = 'portal.example.test';
const COOKIE = '__Host-th_session';
const hasRedis = redisServerInstalled();
if (!hasRedis) warnRedisSkipped('test/apps.test.ts (Redis cases)');

let shopProvider: TestProvider;
let adminProvider: TestProvider;
let shopApi: Upstream;
let adminApi: Upstream;
let redis: RedisServer | undefined;
const started: TestBff[] = [];

beforeAll(async () => {
  [shopProvider, adminProvider] = await Promise.all([
    startProvider({ redirectUris: [`https://${SHOP}/auth/callback`, `https://${PORTAL}/partners/auth/callback`] }),
    startProvider({ redirectUris: [`https://${ADMIN}/auth/callback`, `https://${PORTAL}/auth/callback`] }),
  ]);
  [shopApi, adminApi] = await Promise.all([startIntrospectingUpstream(shopProvider), startIntrospectingUpstream(adminProvider)]);
  if (hasRedis) redis = await startRedisServer();
});

afterAll(async () => {
  for (const bff of started) await bff.app.close();
  await Promise.all([shopApi?.close(), adminApi?.close()]);
  await Promise.all([shopProvider?.stop(), adminProvider?.stop()]);
  await redis?.stop();
});

type Store = 'cookie' | 'redis';
const stores: Store[] = hasRedis ? ['cookie', 'redis'] : ['cookie'];

const clientOf = (provider: TestProvider) => ({ issuer: provider.issuer, clientId: provider.clients.basic.clientId, clientSecret: provider.clients.basic.clientSecret });

/** Two apps on two hosts sharing the top-level session settings (secrets and cookie name included). */
function twoApps(store: Store, keyPrefix = uniquePrefix()): Record<string, unknown> {
  return {
    publicUrl: null,
    session: { store, secrets: [SECRET], ...(store === 'redis' ? { redis: { url: redis!.url, keyPrefix } } : {}) },
    apps: [
      { name: 'shop', match: { host: SHOP }, publicUrl: `https://${SHOP}`, oidc: clientOf(shopProvider), routes: [{ prefix: '/api', upstream: shopApi.url }] },
      { name: 'admin', publicUrl: `https://${ADMIN}`, oidc: clientOf(adminProvider), routes: [{ prefix: '/api', upstream: adminApi.url }] },
    ],
  };
}

async function start(raw: Record<string, unknown>, options: { now?: () => number; waitForProvider?: boolean } = {}): Promise<TestBff> {
  const bff = await startBff(raw, options);
  started.push(bff);
  return bff;
}

/** Polls /readyz (before traffic with replicas: the Redis connection must be up). */
async function ready(app: FastifyInstance): Promise<void> {
  const deadline = Date.now() + 10_000;
  while ((await app.inject('/readyz')).statusCode !== 200) {
    if (Date.now() > deadline) throw new Error('never became ready');
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** A browser on one host: every request carries that Host (cookies are per host, as browsers keep them). */
class HostBrowser extends TestBrowser {
  constructor(
    app: FastifyInstance,
    readonly host: string,
    private readonly prefix = '',
  ) {
    super(app);
  }

  override request(url: string, options: Parameters<TestBrowser['request']>[1] = {}): Promise<LightMyRequestResponse> {
    return super.request(url, { ...options, headers: { host: this.host, ...options.headers } });
  }

  override async startLogin(returnTo?: string): Promise<string> {
    const query = returnTo === undefined ? '' : `?returnTo=${encodeURIComponent(returnTo)}`;
    const response = await this.request(`${this.prefix}/auth/login${query}`, { csrf: false });
    if (response.statusCode !== 302) throw new Error(`login did not redirect: ${response.statusCode} ${response.body}`);
    return String(response.headers.location);
  }

  async signIn(login: string): Promise<LightMyRequestResponse> {
    const callbackUrl = await completeProviderLogin(await this.startLogin(), { login });
    expect(new URL(callbackUrl).host).toBe(this.host);
    return this.callback(callbackUrl);
  }

  user(): Promise<LightMyRequestResponse> {
    return this.request(`${this.prefix}/auth/user`);
  }

  api(path = '/x'): Promise<LightMyRequestResponse> {
    return this.request(`${this.prefix}/api${path}`);
  }
}

function postLogoutToken(app: FastifyInstance, host: string, token: string): Promise<LightMyRequestResponse> {
  return app.inject({
    method: 'POST',
    url: '/auth/backchannel-logout',
    headers: { host, 'content-type': 'application/x-www-form-urlencoded' },
    payload: new URLSearchParams({ logout_token: token }).toString(),
  });
}

const refreshGrants = (provider: TestProvider) => provider.tokenRequests.filter((r) => r.grantType === 'refresh_token').length;

describe.each(stores)('two apps on two hosts (store: %s)', (store) => {
  let bff: TestBff;
  beforeAll(async () => {
    bff = await start(twoApps(store));
    await ready(bff.app);
  });

  it('signs in to both apps, each calling its own upstream with its own provider’s token', async () => {
    const shop = new HostBrowser(bff.app, SHOP);
    const admin = new HostBrowser(bff.app, ADMIN);
    expect((await shop.signIn('alice')).statusCode).toBe(302);
    expect((await admin.signIn('bob')).statusCode).toBe(302);
    const shopCall = await shop.api();
    const adminCall = await admin.api();
    expect(shopCall.statusCode).toBe(200);
    expect(adminCall.statusCode).toBe(200);
    expect(shopCall.json()).toMatchObject({ sub: 'alice' });
    expect(adminCall.json()).toMatchObject({ sub: 'bob' });
    expect(shopApi.requests.at(-1)).toMatchObject({ tokenActive: true, sub: 'alice' });
    expect(adminApi.requests.at(-1)).toMatchObject({ tokenActive: true, sub: 'bob' });
  });

  it('a cookie of one app is refused by the other, and the other’s own session is untouched', async () => {
    const shop = new HostBrowser(bff.app, SHOP);
    const admin = new HostBrowser(bff.app, ADMIN);
    await shop.signIn('alice');
    await admin.signIn('bob');
    // Same cookie name, same configured secrets: the seal is still the shop's alone.
    const stolen = new HostBrowser(bff.app, ADMIN);
    stolen.cookies.set(COOKIE, shop.cookies.get(COOKIE)!);
    const refused = await stolen.user();
    expect(refused.statusCode).toBe(401);
    expect(refused.json()).toMatchObject({ error: 'login_required' });
    expect((await stolen.api()).statusCode).toBe(401);
    expect((await admin.user()).json()).toMatchObject({ claims: { sub: 'bob' } });
    expect((await shop.user()).json()).toMatchObject({ claims: { sub: 'alice' } });
  });

  it('refreshes in each app at its own provider', async () => {
    const shop = new HostBrowser(bff.app, SHOP);
    const admin = new HostBrowser(bff.app, ADMIN);
    await shop.signIn('alice');
    await admin.signIn('bob');
    const before = { shop: refreshGrants(shopProvider), admin: refreshGrants(adminProvider) };
    expect((await shop.request('/auth/refresh', { method: 'POST' })).statusCode).toBe(200);
    expect(refreshGrants(shopProvider)).toBe(before.shop + 1);
    expect(refreshGrants(adminProvider)).toBe(before.admin);
    expect((await admin.request('/auth/refresh', { method: 'POST' })).statusCode).toBe(200);
    expect(refreshGrants(adminProvider)).toBe(before.admin + 1);
    expect((await shop.api()).statusCode).toBe(200);
    expect((await admin.api()).statusCode).toBe(200);
  });

  it('signing out of one app leaves the other signed in', async () => {
    const shop = new HostBrowser(bff.app, SHOP);
    const admin = new HostBrowser(bff.app, ADMIN);
    await shop.signIn('carol');
    await admin.signIn('carol');
    expect((await shop.request('/auth/logout', { method: 'POST' })).statusCode).toBe(200);
    expect((await shop.user()).statusCode).toBe(401);
    expect((await admin.user()).json()).toMatchObject({ claims: { sub: 'carol' } });
    expect((await admin.api()).statusCode).toBe(200);
  });

  it('a back-channel logout of one app leaves the other’s session, even for the same sub and sid', async () => {
    const shop = new HostBrowser(bff.app, SHOP);
    const admin = new HostBrowser(bff.app, ADMIN);
    await shop.signIn('dave');
    await admin.signIn('dave');
    const adminSid = String((await admin.user()).json().claims.sid);
    // The shop's provider ends "dave" and, for good measure, a session with the admin session's sid.
    const bySub = await postLogoutToken(bff.app, SHOP, await signLogoutToken(shopProvider, { sub: 'dave', sid: undefined }));
    expect(bySub.statusCode).toBe(200);
    const bySid = await postLogoutToken(bff.app, SHOP, await signLogoutToken(shopProvider, { sub: undefined, sid: adminSid }));
    expect(bySid.statusCode).toBe(200);
    await expect.poll(async () => (await shop.user()).statusCode).toBe(401);
    expect((await admin.user()).json()).toMatchObject({ claims: { sub: 'dave' } });
    expect((await admin.api()).statusCode).toBe(200);
    // A logout token of the shop's provider means nothing to the admin app.
    const elsewhere = await postLogoutToken(bff.app, ADMIN, await signLogoutToken(shopProvider, { sub: 'dave', sid: undefined }));
    expect(elsewhere.statusCode).toBe(400);
    expect((await admin.user()).statusCode).toBe(200);
  });

  it('labels every app metric with its app', async () => {
    const shop = new HostBrowser(bff.app, SHOP);
    const admin = new HostBrowser(bff.app, ADMIN);
    await shop.signIn('erin');
    await admin.signIn('erin');
    await shop.api();
    await admin.api();
    const text = (await bff.app.inject({ url: '/metrics', headers: { host: SHOP } })).body;
    expect(text).toMatch(/^token_handler_logins_total\{outcome="success",app="shop"\} [1-9]/m);
    expect(text).toMatch(/^token_handler_logins_total\{outcome="success",app="admin"\} [1-9]/m);
    expect(text).toMatch(/^token_handler_http_requests_total\{group="api:\/api",status="200",app="shop"\} [1-9]/m);
    expect(text).toMatch(/^token_handler_http_requests_total\{group="api:\/api",status="200",app="admin"\} [1-9]/m);
    // One family per metric, whatever the number of apps.
    expect(text.match(/^# TYPE token_handler_logins_total /gm)).toHaveLength(1);
    // What is the process's has no app.
    expect(text).toMatch(/^token_handler_process_resident_memory_bytes \d/m);
  });

  it('writes the app on its log lines', async () => {
    const shop = new HostBrowser(bff.app, SHOP);
    await shop.signIn('frank');
    await shop.api('/logged');
    const lines = bff.logs;
    expect(lines.find((line) => line.msg === 'request' && line.url === '/api/logged')).toMatchObject({ app: 'shop', status: 200 });
    expect(lines.filter((line) => line.msg === 'session started').every((line) => line.app === 'shop' || line.app === 'admin')).toBe(true);
    expect(lines.find((line) => line.msg === 'provider metadata loaded' && line.app === 'admin')).toBeDefined();
  });

  it('answers a request for no app with 404 not_found', async () => {
    for (const host of ['nobody.example.test', `${SHOP}.evil.test`]) {
      const response = await bff.app.inject({ url: '/auth/login', headers: { host } });
      expect(response.statusCode).toBe(404);
      expect(response.json()).toMatchObject({ error: 'not_found' });
    }
    // HEAD routes (made by Fastify from GET routes) carry the app's host too.
    expect((await bff.app.inject({ method: 'HEAD', url: '/auth/client.js', headers: { host: 'nobody.example.test' } })).statusCode).toBe(404);
    expect((await bff.app.inject({ method: 'HEAD', url: '/auth/client.js', headers: { host: ADMIN } })).statusCode).toBe(200);
    // A port on the Host changes nothing: the app is matched by its host name.
    expect((await bff.app.inject({ url: '/auth/login', headers: { host: `${SHOP.toUpperCase()}:8443` } })).statusCode).toBe(302);
    // Health and metrics are the process's, on every host.
    expect((await bff.app.inject({ url: '/healthz', headers: { host: 'nobody.example.test' } })).statusCode).toBe(200);
  });
});

describe('one provider down', () => {
  it('only its app’s calls get 503, and readiness names the app', async () => {
    const time = { now: Date.now() };
    const bff = await start(twoApps('cookie'), { now: () => time.now });
    const shop = new HostBrowser(bff.app, SHOP);
    const admin = new HostBrowser(bff.app, ADMIN);
    await shop.signIn('gina');
    await admin.signIn('gina');
    await adminProvider.pause();
    try {
      // Every access token is due: each app refreshes at its own provider.
      time.now += 10 * 60_000;
      const shopCall = await shop.api();
      const adminCall = await admin.api();
      expect(shopCall.statusCode).toBe(200);
      expect(adminCall.statusCode).toBe(503);
      expect(adminCall.json()).toMatchObject({ error: 'idp_unavailable' });
      const readiness = await bff.app.inject('/readyz');
      expect(readiness.statusCode).toBe(200);
      expect(readiness.json()).toMatchObject({
        status: 'ready',
        apps: { shop: { status: 'ready', checks: { provider: 'ok' } }, admin: { status: 'not_ready', checks: { provider: 'failing' } } },
      });
      expect((await bff.app.inject('/readyz?app=admin')).statusCode).toBe(503);
      expect((await bff.app.inject('/readyz?app=shop')).statusCode).toBe(200);
      expect((await bff.app.inject('/readyz?app=nobody')).statusCode).toBe(404);
    } finally {
      await adminProvider.resume();
    }
    // Back: the next call succeeds, and readiness says so.
    expect((await admin.api()).statusCode).toBe(200);
    expect((await bff.app.inject('/readyz?app=admin')).statusCode).toBe(200);
  });

  it('an app whose provider is down at start-up is not ready while the other serves', async () => {
    await adminProvider.pause();
    try {
      const bff = await start(twoApps('cookie'), { waitForProvider: false });
      await expect.poll(async () => (await bff.app.inject('/readyz?app=shop')).statusCode, { timeout: 10_000 }).toBe(200);
      const readiness = await bff.app.inject('/readyz');
      expect(readiness.statusCode).toBe(200);
      expect(readiness.json()).toMatchObject({ apps: { shop: { status: 'ready' }, admin: { status: 'not_ready' } } });
      expect((await new HostBrowser(bff.app, SHOP).signIn('hana')).statusCode).toBe(302);
      const login = await bff.app.inject({ url: '/auth/login', headers: { host: ADMIN } });
      expect(login.statusCode).toBe(503);
    } finally {
      await adminProvider.resume();
    }
  });
});

describe('two apps on one host by path prefix', () => {
  it('each app answers below its own prefix, with its own provider, cookie and upstream', async () => {
    const bff = await start({
      publicUrl: null,
      session: { secrets: [SECRET] },
      apps: [
        { name: 'portal', publicUrl: `https://${PORTAL}`, oidc: clientOf(adminProvider), session: { cookieName: 'th_portal' }, routes: [{ prefix: '/api', upstream: adminApi.url }] },
        {
          name: 'partners',
          match: { host: PORTAL, pathPrefix: '/partners' },
          publicUrl: `https://${PORTAL}`,
          oidc: clientOf(shopProvider),
          session: { cookieName: 'th_partners' },
          routes: [{ prefix: '/api', upstream: shopApi.url }],
        },
      ],
    });
    const portal = new HostBrowser(bff.app, PORTAL);
    const partners = new HostBrowser(bff.app, PORTAL, '/partners');
    const back = await partners.signIn('ivan');
    // The partners' start page is below their prefix.
    expect(back.headers.location).toBe('/partners/');
    await portal.signIn('judy');
    expect([...partners.cookies.keys()]).toContain('__Host-th_partners');
    expect([...portal.cookies.keys()]).toContain('__Host-th_portal');
    expect((await partners.api()).json()).toMatchObject({ sub: 'ivan' });
    expect(shopApi.requests.at(-1)).toMatchObject({ sub: 'ivan', tokenActive: true });
    expect((await portal.api()).json()).toMatchObject({ sub: 'judy' });
    expect(adminApi.requests.at(-1)).toMatchObject({ sub: 'judy', tokenActive: true });
    // A path below the prefix that no route serves is the partners' 404, not the portal's.
    expect((await partners.request('/partners/nothing')).json()).toMatchObject({ error: 'not_found' });
    const lines = bff.logs.filter((line) => line.msg === 'request' && line.url === '/partners/api/x');
    expect(lines.at(-1)).toMatchObject({ app: 'partners', group: 'api:/api' });
  });
});

describe('each app with its own SPA', () => {
  it('serves each host its own build, with the page-load fallback of that app, and JSON 404s for its API paths', async () => {
    const shopSpa = writeSpaBuild();
    const adminSpa = mkdtempSync(join(tmpdir(), 'th-admin-spa-'));
    writeFileSync(join(adminSpa, 'index.html'), '<!DOCTYPE html><title>admin console</title>');
    const raw = twoApps('cookie');
    const [shop, admin] = raw.apps as Array<{ routes: unknown[] }>;
    shop!.routes.push({ prefix: '/', static: shopSpa });
    admin!.routes.push({ prefix: '/', static: adminSpa });
    const bff = await start(raw);
    const page = (host: string, url: string) => bff.app.inject({ url, headers: { host, accept: 'text/html', 'sec-fetch-mode': 'navigate' } });
    const adminPage = await page(ADMIN, '/orders/42');
    expect(adminPage.statusCode).toBe(200);
    expect(adminPage.body).toContain('admin console');
    const shopPage = await page(SHOP, '/');
    expect(shopPage.statusCode).toBe(200);
    expect(shopPage.body).not.toContain('admin console');
    const missingApi = await bff.app.inject({ url: '/api/missing', headers: { host: ADMIN, 'x-csrf': '1' } });
    expect(missingApi.statusCode).toBe(401);
    expect(missingApi.json()).toMatchObject({ error: 'login_required' });
    expect((await page('nobody.example.test', '/')).statusCode).toBe(404);
  });
});

describe('WebSockets and events per app', () => {
  /** Opens a socket on `host` through the listening server; resolves with its first message and its close. */
  function socket(port: number, host: string, cookie: string, path: string) {
    return new Promise<{ first: string; closed: Promise<{ code: number }>; ws: WebSocket; messages: string[] }>((resolve, reject) => {
      const ws = new WebSocket(`ws://127.0.0.1:${port}${path}`, undefined, { headers: { host, origin: `https://${host}`, cookie } });
      const closed = new Promise<{ code: number }>((done) => ws.on('close', (code) => done({ code })));
      const messages: string[] = [];
      ws.on('message', (data) => {
        messages.push(data.toString());
        if (messages.length === 1) resolve({ first: messages[0]!, closed, ws, messages });
      });
      ws.on('unexpected-response', (_req, res) => reject(new Error(`upgrade answered ${res.statusCode}`)));
      ws.on('error', reject);
    });
  }

  it('each app upgrades with its own session and token, and a back-channel logout closes only its sockets', async () => {
    const shopWs = await startWsUpstream(shopProvider);
    const adminWs = await startWsUpstream(adminProvider);
    try {
      const raw = twoApps('cookie');
      const [shopApp, adminApp] = raw.apps as Array<{ routes: unknown[] }>;
      shopApp!.routes.push({ prefix: '/live', upstream: shopWs.url, websocket: true });
      adminApp!.routes.push({ prefix: '/live', upstream: adminWs.url, websocket: true });
      const bff = await start(raw);
      const address = await bff.app.listen({ host: '127.0.0.1', port: 0 });
      const port = Number(new URL(address).port);
      const shop = new HostBrowser(bff.app, SHOP);
      const admin = new HostBrowser(bff.app, ADMIN);
      await shop.signIn('lena');
      await admin.signIn('lena');
      const onShop = await socket(port, SHOP, shop.cookieHeader(), '/live/hello');
      const onAdmin = await socket(port, ADMIN, admin.cookieHeader(), '/live/hello');
      expect(JSON.parse(onShop.first)).toEqual({ hello: 'lena' });
      expect(JSON.parse(onAdmin.first)).toEqual({ hello: 'lena' });
      // The shop's cookie does not open the admin app's socket.
      await expect(socket(port, ADMIN, shop.cookieHeader(), '/live/hello')).rejects.toThrow('upgrade answered 401');
      // The shop's provider signs lena out of the shop: its socket closes, the admin's stays.
      expect((await postLogoutToken(bff.app, SHOP, await signLogoutToken(shopProvider, { sub: 'lena', sid: undefined }))).statusCode).toBe(200);
      expect((await onShop.closed).code).toBe(4401);
      onAdmin.ws.send('still here');
      await expect.poll(() => onAdmin.messages.at(-1)).toBe('still here');
      onAdmin.ws.close();
      await onAdmin.closed;
    } finally {
      await shopWs.close();
      await adminWs.close();
    }
  });
});

describe('GET /auth/events per app', () => {
  /** Reads an event stream of `host` through the listening server; `events` fills as they arrive. */
  function openEvents(port: number, host: string, cookie: string) {
    const events: string[] = [];
    let ended = false;
    let status = 0;
    const request = httpGet({ host: '127.0.0.1', port, path: '/auth/events', headers: { host, cookie, origin: `https://${host}`, accept: 'text/event-stream' } }, (response) => {
      status = response.statusCode ?? 0;
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => {
        for (const match of chunk.matchAll(/^event: (.*)$/gm)) events.push(match[1]!);
      });
      response.on('end', () => (ended = true));
      response.on('close', () => (ended = true));
    });
    request.on('error', () => (ended = true));
    return { events, status: () => status, ended: () => ended, close: () => request.destroy() };
  }

  it('a back-channel logout of one app ends its streams with session-ended, and not the other app\'s', async () => {
    const bff = await start(twoApps('cookie'));
    const port = Number(new URL(await bff.app.listen({ host: '127.0.0.1', port: 0 })).port);
    const shop = new HostBrowser(bff.app, SHOP);
    const admin = new HostBrowser(bff.app, ADMIN);
    await shop.signIn('nina');
    await admin.signIn('nina');
    const shopEvents = openEvents(port, SHOP, shop.cookieHeader());
    const adminEvents = openEvents(port, ADMIN, admin.cookieHeader());
    try {
      await expect.poll(() => [shopEvents.status(), adminEvents.status()], { timeout: 5000 }).toEqual([200, 200]);
      expect((await postLogoutToken(bff.app, SHOP, await signLogoutToken(shopProvider, { sub: 'nina', sid: undefined }))).statusCode).toBe(200);
      await expect.poll(() => shopEvents.events, { timeout: 5000 }).toContain('session-ended');
      await expect.poll(() => shopEvents.ended(), { timeout: 5000 }).toBe(true);
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(adminEvents.events).not.toContain('session-ended');
      expect(adminEvents.ended()).toBe(false);
    } finally {
      shopEvents.close();
      adminEvents.close();
    }
  });
});

describe.runIf(hasRedis)('two replicas with Redis', () => {
  it('refresh of one app is single-flight across replicas, and the other app’s keys stay apart', async () => {
    const time = { now: Date.now() };
    const keyPrefix = uniquePrefix();
    const a = await start(twoApps('redis', keyPrefix), { now: () => time.now });
    const b = await start(twoApps('redis', keyPrefix), { now: () => time.now });
    await ready(a.app);
    await ready(b.app);
    const onA = new HostBrowser(a.app, SHOP);
    await onA.signIn('kim');
    const onB = new HostBrowser(b.app, SHOP);
    for (const [name, value] of onA.cookies) onB.cookies.set(name, value);
    const admin = new HostBrowser(a.app, ADMIN);
    await admin.signIn('kim');
    const before = refreshGrants(shopProvider);
    time.now += 10 * 60_000;
    const answers = await Promise.all([onA.api(), onB.api(), onA.api(), onB.api()]);
    expect(answers.map((r) => r.statusCode)).toEqual([200, 200, 200, 200]);
    expect(refreshGrants(shopProvider)).toBe(before + 1);
    // Each app's keys carry its name.
    const keys = (await redis!.dump(keyPrefix)).map(({ key }) => key);
    expect(keys.some((key) => key.startsWith(`${keyPrefix}shop:`))).toBe(true);
    expect(keys.every((key) => key.startsWith(`${keyPrefix}shop:`) || key.startsWith(`${keyPrefix}admin:`))).toBe(true);
  });
});

describe.runIf(hasRedis)('the admin endpoint', () => {
  it('ends a user\'s sessions in the app it names, or in every app without one', async () => {
    const token = 'an-admin-token-that-is-long-enough-0123456789';
    const bff = await start({ ...twoApps('redis'), metrics: { onMainListener: false, port: 0 }, admin: { token } });
    await bff.app.listen({ host: '127.0.0.1', port: 0 });
    await expect.poll(() => bff.logs.some((line) => line.msg === 'metrics served on a separate port'), { timeout: 5000 }).toBe(true);
    const port = bff.logs.find((line) => line.msg === 'metrics served on a separate port')!.port;
    await ready(bff.app);
    const revoke = (body: Record<string, unknown>) =>
      fetch(`http://127.0.0.1:${String(port)}/admin/sessions/revoke`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const shop = new HostBrowser(bff.app, SHOP);
    const admin = new HostBrowser(bff.app, ADMIN);
    await shop.signIn('mona');
    await admin.signIn('mona');
    const unknown = await revoke({ sub: 'mona', app: 'nobody' });
    expect(unknown.status).toBe(400);
    const inShop = await revoke({ sub: 'mona', app: 'shop' });
    expect(await inShop.json()).toEqual({ ended: 1 });
    expect((await shop.user()).statusCode).toBe(401);
    expect((await admin.user()).statusCode).toBe(200);
    await shop.signIn('mona');
    expect(await (await revoke({ sub: 'mona' })).json()).toEqual({ ended: 2 });
    expect((await shop.user()).statusCode).toBe(401);
    expect((await admin.user()).statusCode).toBe(401);
  });
});
