/**
 * Per-API tokens (issue 21): RFC 8707 resource indicators per route (token: user + resource)
 * and RFC 8693 token exchange per route (token: exchange), against the real oidc-provider
 * with two resource servers (own audiences, JWT access tokens) and a token-exchange grant
 * registered through registerGrantType; upstreams that verify JWTs against the provider's
 * JWKS and accept only their own audience.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeJwt } from 'jose';
import { startProvider, TOKEN_EXCHANGE_GRANT, isTokenActive, type TestProvider, type TokenRequestRecord } from './support/provider.js';
import { startUpstream, type Upstream } from './support/upstream.js';
import { REDIRECT_URI, SECRET, startBff, TestBrowser, type TestBff } from './support/bff.js';
import { redisServerInstalled, startRedisServer, uniquePrefix, warnRedisSkipped, type RedisServer } from './support/redis.js';

const SESSION = '__Host-th_session';
const ORDERS = 'https://orders.example.test';
const BILLING = 'https://billing.example.test';
const hasRedis = redisServerInstalled();
if (!hasRedis) warnRedisSkipped('test/per-api-tokens.test.ts (the two-replica storm)');

let provider: TestProvider;
let main: Upstream;
let orders: Upstream;
let billing: Upstream;
let reports: Upstream;
let redisServer: RedisServer | undefined;
const time = { now: Date.now() };
const started: TestBff[] = [];

/** An upstream that accepts only JWTs for `audience`, verified against the provider's JWKS. */
function jwtUpstream(audience: string): Promise<Upstream> {
  return startUpstream({
    introspectionEndpoint: provider.endpoints.introspection,
    clientId: provider.clients.api.clientId,
    clientSecret: provider.clients.api.clientSecret,
    jwt: { jwksUri: provider.endpoints.jwks, issuer: provider.issuer, audience, only: true },
  });
}

beforeAll(async () => {
  provider = await startProvider({
    redirectUris: [REDIRECT_URI],
    rotateRefreshToken: true,
    resourceServers: {
      [ORDERS]: { audience: 'orders-api', scope: 'orders:read' },
      [BILLING]: { audience: 'billing-api', scope: 'billing:read' },
    },
    tokenExchange: { audiences: { reports: { scope: 'reports:read' } }, refuseAccounts: ['never-exchangeable'] },
  });
  main = await startUpstream({
    introspectionEndpoint: provider.endpoints.introspection,
    clientId: provider.clients.api.clientId,
    clientSecret: provider.clients.api.clientSecret,
  });
  orders = await jwtUpstream('orders-api');
  billing = await jwtUpstream('billing-api');
  reports = await jwtUpstream('reports');
  if (hasRedis) redisServer = await startRedisServer();
});

afterAll(async () => {
  for (const bff of started) await bff.app.close();
  for (const upstream of [main, orders, billing, reports]) await upstream?.close();
  await provider?.stop();
  await redisServer?.stop();
});

function config(session: Record<string, unknown> = { store: 'cookie' }): Record<string, unknown> {
  return {
    oidc: {
      issuer: provider.issuer,
      clientId: provider.clients.basic.clientId,
      clientSecret: provider.clients.basic.clientSecret,
      scopes: ['openid', 'profile', 'email', 'offline_access', 'orders:read', 'billing:read'],
    },
    session: { secrets: [SECRET], ...session },
    routes: [
      { prefix: '/api', upstream: main.url },
      { prefix: '/orders', upstream: orders.url, resource: ORDERS },
      { prefix: '/billing', upstream: billing.url, resource: BILLING },
      { prefix: '/reports', upstream: reports.url, token: 'exchange', exchange: { audience: 'reports', scope: 'reports:read' } },
      { prefix: '/nowhere', upstream: reports.url, token: 'exchange', exchange: { audience: 'not-served' } },
    ],
  };
}

async function bff(session?: Record<string, unknown>): Promise<TestBff> {
  const instance = await startBff(config(session), { now: () => time.now });
  started.push(instance);
  return instance;
}

const grantsSince = (from: number, type = 'refresh_token'): TokenRequestRecord[] => provider.tokenRequests.slice(from).filter((r) => r.grantType === type);

/** The payload of the JWT an upstream last received (the test reads the upstream's records; nothing reaches the browser). */
function lastToken(upstream: Upstream): Record<string, unknown> {
  const request = upstream.requests.at(-1)!;
  return request.introspection as Record<string, unknown>;
}

function sessionCookieBytes(browser: TestBrowser): number {
  let bytes = 0;
  for (const [name, value] of browser.cookies) if (name.startsWith(SESSION)) bytes += name.length + 1 + value.length;
  return bytes;
}

/** Every refresh token was presented at most once, and every refresh grant succeeded. */
function expectNoReuse(grants: TokenRequestRecord[]): void {
  const presented = grants.map((g) => g.presentedRefreshToken);
  expect(presented.every(Boolean)).toBe(true);
  expect(new Set(presented).size).toBe(presented.length);
  expect(grants.map((g) => `${g.status} ${g.error ?? ''}`)).toEqual(grants.map(() => '200 '));
}

describe('per-API tokens', () => {
  it('login asks for every resource; each upstream gets its own token, and accepts no other', async () => {
    const { app } = await bff();
    const browser = new TestBrowser(app);
    const location = new URL(await browser.startLogin());
    expect(location.searchParams.getAll('resource').sort()).toEqual([BILLING, ORDERS]);
    await browser.login({ login: 'own-token-user' });

    const before = provider.tokenRequests.length;
    for (const path of ['/api/x', '/orders/x', '/billing/x', '/reports/x']) expect((await browser.request(path)).statusCode, path).toBe(200);
    expect(main.requests.at(-1)!.tokenActive).toBe(true);
    expect(lastToken(orders)).toMatchObject({ aud: 'orders-api', scope: 'orders:read', sub: 'own-token-user' });
    expect(lastToken(billing)).toMatchObject({ aud: 'billing-api', scope: 'billing:read', sub: 'own-token-user' });
    expect(lastToken(reports)).toMatchObject({ aud: 'reports', scope: 'reports:read', sub: 'own-token-user' });
    const targets = provider.tokenRequests.slice(before).map((r) => `${r.grantType} ${r.target ?? ''}`);
    expect(targets).toEqual([`refresh_token ${ORDERS}`, `refresh_token ${BILLING}`, `${TOKEN_EXCHANGE_GRANT} reports`]);

    // Each upstream refuses the others' tokens.
    const tokenOf = (upstream: Upstream) => /^Bearer (\S+)$/.exec(String(upstream.requests.at(-1)!.headers.authorization))![1]!;
    const call = (upstream: Upstream, token: string) => fetch(`${upstream.url}/x`, { headers: { authorization: `Bearer ${token}` } }).then((r) => r.status);
    const [ordersToken, billingToken] = [tokenOf(orders), tokenOf(billing)];
    expect(await call(orders, billingToken)).toBe(401);
    expect(await call(billing, ordersToken)).toBe(401);
    expect(await call(reports, ordersToken)).toBe(401);
    expect(await call(orders, ordersToken)).toBe(200);
    expect(decodeJwt(ordersToken).aud).toBe('orders-api');

    // Cached: more calls, no more grants.
    const cached = provider.tokenRequests.length;
    for (const path of ['/orders/y', '/billing/y', '/reports/y']) expect((await browser.request(path)).statusCode).toBe(200);
    expect(provider.tokenRequests.length).toBe(cached);

    // /auth/user: expiry times per route, never a value.
    const user = await browser.request('/auth/user');
    const view = JSON.parse(user.body) as { apiTokens: Record<string, { expiresAt: string | null }> };
    expect(Object.keys(view.apiTokens)).toEqual(['/orders', '/billing', '/reports', '/nowhere']);
    expect(view.apiTokens['/orders']!.expiresAt).toMatch(/^\d{4}-\d\d-\d\dT/);
    expect(view.apiTokens['/nowhere']!.expiresAt).toBeNull();

    // Metrics by route.
    const metrics = (await app.inject({ method: 'GET', url: '/metrics' })).body;
    expect(metrics).toMatch(/token_handler_api_token_grants_total\{route="\/orders",kind="resource",outcome="success",app="default"\} 1/);
    expect(metrics).toMatch(/token_handler_api_token_grants_total\{route="\/reports",kind="exchange",outcome="success",app="default"\} 1/);
  });

  it('cookie store: the cookie-size cost of each per-API token', async () => {
    const { app } = await bff();
    const browser = new TestBrowser(app);
    await browser.login({ login: 'cookie-size-user' });
    const sizes: Record<string, number> = { 'after login': sessionCookieBytes(browser) };
    for (const path of ['/orders/x', '/billing/x', '/reports/x']) {
      expect((await browser.request(path)).statusCode).toBe(200);
      sizes[`+ ${path.split('/')[1]}`] = sessionCookieBytes(browser);
    }
    const chunks = [...browser.cookies.keys()].filter((name) => name.startsWith(SESSION)).length;
    const jwtLength = (upstream: Upstream) => String(upstream.requests.at(-1)!.headers.authorization).length - 'Bearer '.length;
    console.log(
      `[per-api-tokens] cookie store, session cookie bytes (name=value, all chunks): ${JSON.stringify(sizes)}; chunks now: ${chunks}; token lengths: orders ${jwtLength(orders)}, billing ${jwtLength(billing)}, reports ${jwtLength(reports)}`,
    );
    expect(sizes['+ orders']!).toBeGreaterThan(sizes['after login']!);
  });

  it('50 parallel calls over both resource routes, every token expired, rotation with reuse detection: all succeed, no refresh token used twice', async () => {
    const { app } = await bff();
    const browser = new TestBrowser(app);
    await browser.login({ login: 'storm-user' });
    for (const path of ['/orders/warm', '/billing/warm']) expect((await browser.request(path)).statusCode).toBe(200);
    const cookie = browser.cookieHeader();
    const from = provider.tokenRequests.length;
    time.now += 120_000;

    const responses = await Promise.all(
      Array.from({ length: 50 }, (_, i) => app.inject({ method: 'GET', url: `/${['orders', 'billing', 'api'][i % 3]}/storm/${i}`, headers: { cookie, 'x-csrf': '1' } })),
    );
    expect(responses.map((r) => r.statusCode)).toEqual(Array(50).fill(200));
    const grants = grantsSince(from);
    console.log(`[per-api-tokens] storm, one replica: 50 calls -> ${grants.length} refresh_token grants (${grants.map((g) => g.target ?? 'session').join(', ')}), ${new Set(grants.map((g) => g.presentedRefreshToken)).size} distinct refresh tokens presented`);
    expectNoReuse(grants);
    expect(grants.map((g) => g.target ?? 'session')).toEqual(['session', ORDERS, BILLING]);

    // The grant is alive: the next calls (new cookie) work, and the old cookie catches up without a grant.
    for (const r of responses.slice(0, 1)) browser.store(r);
    expect((await browser.request('/orders/after')).statusCode).toBe(200);
    expect((await app.inject({ method: 'GET', url: '/billing/old-cookie', headers: { cookie, 'x-csrf': '1' } })).statusCode).toBe(200);
    expect(grantsSince(from)).toHaveLength(3);
  });

  it('the first calls to both resource routes at once (no resource token yet): chained refreshes, never the same refresh token twice', async () => {
    const { app } = await bff();
    const browser = new TestBrowser(app);
    await browser.login({ login: 'first-calls-user' });
    const cookie = browser.cookieHeader();
    const from = provider.tokenRequests.length;
    const responses = await Promise.all(
      Array.from({ length: 20 }, (_, i) => app.inject({ method: 'GET', url: `/${i % 2 === 0 ? 'orders' : 'billing'}/first/${i}`, headers: { cookie, 'x-csrf': '1' } })),
    );
    expect(responses.map((r) => r.statusCode)).toEqual(Array(20).fill(200));
    const grants = grantsSince(from);
    console.log(`[per-api-tokens] first calls: 20 calls over two routes -> ${grants.length} refresh_token grants (${grants.map((g) => g.target ?? 'session').join(', ')})`);
    expectNoReuse(grants);
    expect(grants.map((g) => g.target).sort()).toEqual([BILLING, ORDERS]);
  });

  it.runIf(hasRedis)('two replicas sharing Redis: the same storm, one refresh chain in all', async () => {
    for (const store of ['redis', 'cookie'] as const) {
      const prefix = uniquePrefix();
      const session = { store, redis: { url: redisServer!.url, keyPrefix: prefix } };
      const a = await bff(session);
      const b = await bff(session);
      const browser = new TestBrowser(a.app);
      await browser.login({ login: `storm-replicas-${store}` });
      for (const path of ['/orders/warm', '/billing/warm']) expect((await browser.request(path)).statusCode).toBe(200);
      const cookie = browser.cookieHeader();
      const from = provider.tokenRequests.length;
      time.now += 120_000;

      const responses = await Promise.all(
        Array.from({ length: 50 }, (_, i) =>
          (i % 2 === 0 ? a : b).app.inject({ method: 'GET', url: `/${['orders', 'billing', 'api'][i % 3]}/storm/${i}`, headers: { cookie, 'x-csrf': '1' } }),
        ),
      );
      expect(responses.map((r) => r.statusCode)).toEqual(Array(50).fill(200));
      const grants = grantsSince(from);
      console.log(`[per-api-tokens] storm, two replicas on Redis (store ${store}): 50 calls -> ${grants.length} refresh_token grants (${grants.map((g) => g.target ?? 'session').join(', ')}), ${new Set(grants.map((g) => g.presentedRefreshToken)).size} distinct refresh tokens presented`);
      expectNoReuse(grants);
      expect(grants).toHaveLength(3);

      const next = new TestBrowser(b.app);
      next.store(responses[0]!);
      if (store === 'redis') next.cookies.set(SESSION, browser.cookies.get(SESSION)!);
      expect((await next.request('/orders/after')).statusCode).toBe(200);
      expect((await next.request('/billing/after')).statusCode).toBe(200);
      expect(grantsSince(from)).toHaveLength(3);
    }
  });

  it("exchange: cached per session and audience, exchanged again after the user's refresh; a refused subject is refreshed once", async () => {
    const { app } = await bff();
    const browser = new TestBrowser(app);
    await browser.login({ login: 'exchange-user' });
    const from = provider.tokenRequests.length;
    const exchanges = () => grantsSince(from, TOKEN_EXCHANGE_GRANT);

    const parallel = await Promise.all(Array.from({ length: 10 }, () => browser.request('/reports/x')));
    expect(parallel.map((r) => r.statusCode)).toEqual(Array(10).fill(200));
    expect((await browser.request('/reports/again')).statusCode).toBe(200);
    expect(exchanges()).toHaveLength(1);
    const first = lastToken(reports).jti;

    // The user's token changes (a forced refresh): the next call exchanges the new one.
    expect((await browser.request('/auth/refresh', { method: 'POST' })).statusCode).toBe(200);
    expect((await browser.request('/reports/after-refresh')).statusCode).toBe(200);
    expect((await browser.request('/reports/after-refresh-2')).statusCode).toBe(200);
    expect(exchanges()).toHaveLength(2);
    expect(lastToken(reports).jti).not.toBe(first);

    // Everything expired: the user's token is refreshed, then exchanged.
    time.now += 120_000;
    expect((await browser.request('/reports/later')).statusCode).toBe(200);
    expect(exchanges()).toHaveLength(3);
    console.log(`[per-api-tokens] exchange: ${exchanges().length} exchanges, ${grantsSince(from).length} refreshes for 14 calls`);

    // The provider no longer accepts the user's access token as a subject: one refresh, one more exchange.
    const other = new TestBrowser(app);
    await other.login({ login: 'revoked-subject-user' });
    const before = provider.tokenRequests.length;
    expect(await provider.revokeAccessTokensOf('revoked-subject-user')).toBeGreaterThan(0);
    expect((await other.request('/reports/x')).statusCode).toBe(200);
    expect(provider.tokenRequests.slice(before).map((r) => `${r.grantType === TOKEN_EXCHANGE_GRANT ? 'exchange' : r.grantType} ${r.status} ${r.error ?? ''}`.trim())).toEqual([
      'exchange 400 invalid_grant',
      'refresh_token 200',
      'exchange 200',
    ]);
  });

  it('an exchange refused with invalid_grant again after the refresh: 401 login_required, session ended', async () => {
    const { app } = await bff();
    const browser = new TestBrowser(app);
    await browser.login({ login: 'never-exchangeable' });
    const before = provider.tokenRequests.length;
    const response = await browser.request('/reports/x');
    expect(response.statusCode).toBe(401);
    expect(JSON.parse(response.body)).toMatchObject({ error: 'login_required' });
    expect(provider.tokenRequests.slice(before).map((r) => `${r.grantType === TOKEN_EXCHANGE_GRANT ? 'exchange' : r.grantType} ${r.status}`)).toEqual([
      'exchange 400',
      'refresh_token 200',
      'exchange 400',
    ]);
    expect((await browser.request('/auth/user')).statusCode).toBe(401);
  });

  it('an exchange the provider refuses for another reason: 503 token_unavailable, session kept, logged', async () => {
    const instance = await bff();
    const browser = new TestBrowser(instance.app);
    await browser.login({ login: 'refused-audience-user' });
    const response = await browser.request('/nowhere/x');
    expect(response.statusCode).toBe(503);
    expect(JSON.parse(response.body)).toMatchObject({ error: 'token_unavailable' });
    expect((await browser.request('/auth/user')).statusCode).toBe(200);
    expect((await browser.request('/reports/x')).statusCode).toBe(200);
    const line = instance.logsAfterStart.find((l) => String(l.msg).startsWith('token exchange refused'));
    expect(line).toMatchObject({ level: 50, route: '/nowhere', audience: 'not-served', oauthError: 'invalid_target' });
  });

  it('logout ends them all: every route refuses, the grant is revoked at the provider', async () => {
    const { app } = await bff();
    const browser = new TestBrowser(app);
    await browser.login({ login: 'logout-user' });
    const from = provider.tokenRequests.length;
    for (const path of ['/api/x', '/orders/x', '/billing/x', '/reports/x']) expect((await browser.request(path)).statusCode).toBe(200);
    const refreshTokens = grantsSince(from).map((g) => g.issued?.refresh_token).filter((t): t is string => !!t);
    const latest = refreshTokens.at(-1)!;
    expect(await isTokenActive(provider, latest)).toBe(true);
    const cookie = browser.cookieHeader();

    expect((await browser.request('/auth/logout', { method: 'POST' })).statusCode).toBe(200);
    for (const path of ['/api/x', '/orders/x', '/billing/x', '/reports/x']) {
      const response = await app.inject({ method: 'GET', url: path, headers: { cookie, 'x-csrf': '1' } });
      expect(response.statusCode, path).toBe(401);
    }
    expect(await isTokenActive(provider, latest)).toBe(false);
    const revocations = provider.requests.filter((r) => r.path.endsWith('/token/revocation') && r.at >= provider.tokenRequests[from]!.at);
    // The refresh token, then the two resource tokens and the exchanged one.
    expect(revocations.length).toBeGreaterThanOrEqual(4);
  });
});
