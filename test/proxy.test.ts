import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startProvider, type TestProvider } from './support/provider.js';
import { startUpstream, type EchoBody, type Upstream } from './support/upstream.js';
import { freePort } from './support/ports.js';
import { PUBLIC_URL, REDIRECT_URI, SECRET, startBff, TestBrowser, type TestBff } from './support/bff.js';

const SESSION = '__Host-th_session';

/** One provider per mode; one upstream that verifies tokens by introspection. */
let rotating: TestProvider;
let nonRotating: TestProvider;
let upstream: Upstream;
let nonRotatingUpstream: Upstream;
let deadPort: number;
const started: TestBff[] = [];

beforeAll(async () => {
  rotating = await startProvider({ redirectUris: [REDIRECT_URI], rotateRefreshToken: true });
  nonRotating = await startProvider({ redirectUris: [REDIRECT_URI], rotateRefreshToken: false });
  upstream = await startUpstream({
    introspectionEndpoint: `${rotating.issuer}/token/introspection`,
    clientId: rotating.clients.api.clientId,
    clientSecret: rotating.clients.api.clientSecret,
  });
  nonRotatingUpstream = await startUpstream({
    introspectionEndpoint: `${nonRotating.issuer}/token/introspection`,
    clientId: nonRotating.clients.api.clientId,
    clientSecret: nonRotating.clients.api.clientSecret,
  });
  deadPort = await freePort();
});

afterAll(async () => {
  for (const bff of started) await bff.app.close();
  await upstream.close();
  await nonRotatingUpstream.close();
  await rotating.stop();
  await nonRotating.stop();
});

interface Clock {
  now: number;
  advance(seconds: number): void;
}

function clock(): Clock {
  return {
    now: Date.now(),
    advance(seconds) {
      this.now += seconds * 1000;
    },
  };
}

async function bffFor(
  provider: TestProvider,
  api: Upstream,
  options: { clock?: Clock; extra?: Record<string, unknown>; oidc?: Record<string, unknown> } = {},
): Promise<TestBff> {
  const instance = await startBff(
    {
      oidc: {
        issuer: provider.issuer,
        clientId: provider.clients.basic.clientId,
        clientSecret: provider.clients.basic.clientSecret,
        ...options.oidc,
      },
      session: { secrets: [SECRET] },
      routes: [
        { prefix: '/api', upstream: api.url },
        { prefix: '/client-api', upstream: api.url, token: 'client', anonymous: true },
        { prefix: '/public-api', upstream: `${api.url}/public`, token: 'none', anonymous: true },
        { prefix: '/down', upstream: `http://127.0.0.1:${deadPort}` },
      ],
      ...options.extra,
    },
    options.clock ? { now: () => options.clock!.now } : {},
  );
  started.push(instance);
  return instance;
}

const refreshGrants = (provider: TestProvider) => provider.tokenRequests.filter((r) => r.grantType === 'refresh_token');
const lastUpstreamRequest = (api: Upstream) => api.requests[api.requests.length - 1]!;

describe('proxying an API call', () => {
  it("attaches the session's access token and strips token-handler's cookies, the CSRF header and the browser's Authorization", async () => {
    const { app } = await bffFor(rotating, upstream);
    const browser = new TestBrowser(app);
    await browser.login();
    const response = await browser.request('/api/orders/42?status=open&x=1', {
      headers: { authorization: 'Bearer forged', cookie: `${browser.cookieHeader()}; theme=dark` },
    });
    expect(response.statusCode).toBe(200);
    const echo = response.json<EchoBody>();
    expect(echo.path).toBe('/orders/42');
    expect(echo.query).toEqual({ status: 'open', x: '1' });
    expect(echo.sub).toBe('alice');
    expect(echo.headers.cookie).toBe('theme=dark');
    expect(echo.headers['x-csrf']).toBeUndefined();
    expect(echo.headers['x-forwarded-proto']).toBe('https');
    expect(lastUpstreamRequest(upstream).headers.authorization).toMatch(/^Bearer (?!forged)/);
    expect(lastUpstreamRequest(upstream).tokenActive).toBe(true);
  });

  it('passes methods, bodies and status codes through', async () => {
    const { app } = await bffFor(rotating, upstream);
    const browser = new TestBrowser(app);
    await browser.login();
    const put = await browser.request('/api/items/1', { method: 'PUT', payload: { name: 'widget' } });
    expect(put.json<EchoBody>().method).toBe('PUT');
    expect(JSON.parse(put.json<EchoBody>().body)).toEqual({ name: 'widget' });
    const teapot = await browser.request('/api/status/418');
    expect(teapot.statusCode).toBe(418);
  });

  it("passes an API's 503 on to a GET at once, calling the API once (the app decides whether to retry)", async () => {
    const { app } = await bffFor(rotating, upstream);
    const browser = new TestBrowser(app);
    await browser.login();
    const before = upstream.requests.length;
    const response = await browser.request('/api/status/503');
    expect(response.statusCode).toBe(503);
    expect(response.json<{ status: number }>().status).toBe(503);
    expect(upstream.requests.length - before).toBe(1);
  });

  it('answers 401 login_required without calling the upstream when there is no session', async () => {
    const { app } = await bffFor(rotating, upstream);
    const before = upstream.requests.length;
    const response = await new TestBrowser(app).request('/api/orders');
    expect(response.statusCode).toBe(401);
    expect(response.json().error).toBe('login_required');
    expect(upstream.requests.length).toBe(before);
  });

  it('refuses a call without the CSRF header with 403 csrf_failed', async () => {
    const { app } = await bffFor(rotating, upstream);
    const browser = new TestBrowser(app);
    await browser.login();
    const before = upstream.requests.length;
    const response = await browser.request('/api/orders', { csrf: false });
    expect(response.statusCode).toBe(403);
    expect(response.json().error).toBe('csrf_failed');
    expect(upstream.requests.length).toBe(before);
  });

  it('refuses a path that escapes the route with 400 bad_request before the CSRF check and the session, without calling the upstream', async () => {
    const { app } = await bffFor(rotating, upstream);
    const before = upstream.requests.length;
    const response = await new TestBrowser(app).request('/api/a%2f%2e%2e%2fb', { csrf: false });
    expect(response.statusCode).toBe(400);
    expect(response.json().error).toBe('bad_request');
    expect(response.headers['x-request-id']).toBeDefined();
    expect(upstream.requests.length).toBe(before);
  });

  it('refuses a call from another origin even with the CSRF header, and accepts an allowed one', async () => {
    const { app } = await bffFor(rotating, upstream, { extra: { csrf: { allowedOrigins: ['https://admin.example.test'] } } });
    const browser = new TestBrowser(app);
    await browser.login();
    expect((await browser.request('/api/x', { headers: { origin: 'https://evil.example' } })).statusCode).toBe(403);
    expect((await browser.request('/api/x', { headers: { 'sec-fetch-site': 'cross-site' } })).statusCode).toBe(403);
    expect((await browser.request('/api/x', { headers: { origin: PUBLIC_URL, 'sec-fetch-site': 'same-origin' } })).statusCode).toBe(200);
    expect((await browser.request('/api/x', { headers: { origin: 'https://admin.example.test' } })).statusCode).toBe(200);
  });

  it("never lets the upstream overwrite token-handler's cookies", async () => {
    const { app } = await bffFor(rotating, upstream);
    const browser = new TestBrowser(app);
    await browser.login();
    const sessionBefore = browser.cookies.get(SESSION);
    const response = await browser.request('/api/set-cookie');
    const setCookies = ([] as string[]).concat(response.headers['set-cookie'] ?? []);
    expect(setCookies.some((c) => c.startsWith(`${SESSION}=`))).toBe(false);
    expect(browser.cookies.get(SESSION)).toBe(sessionBefore);
  });

  it('answers 502 upstream_unavailable when the upstream is down, and keeps the session', async () => {
    const { app } = await bffFor(rotating, upstream);
    const browser = new TestBrowser(app);
    await browser.login();
    const response = await browser.request('/down/anything');
    expect(response.statusCode).toBe(502);
    expect(response.json().error).toBe('upstream_unavailable');
    expect((await browser.request('/api/ok')).statusCode).toBe(200);
  });
});

describe('proactive refresh', () => {
  it('refreshes once when the access token is about to expire and sends the new cookie', async () => {
    const time = clock();
    const { app } = await bffFor(rotating, upstream, { clock: time });
    const browser = new TestBrowser(app);
    await browser.login();
    const oldCookie = browser.cookies.get(SESSION);
    const tokenBefore = (await browser.request('/api/a'), lastUpstreamRequest(upstream).headers.authorization);
    const grantsBefore = refreshGrants(rotating).length;

    time.advance(45); // 60 s token, 30 s skew
    const response = await browser.request('/api/b');
    expect(response.statusCode).toBe(200);
    expect(refreshGrants(rotating).length).toBe(grantsBefore + 1);
    expect(lastUpstreamRequest(upstream).headers.authorization).not.toBe(tokenBefore);
    expect(lastUpstreamRequest(upstream).tokenActive).toBe(true);
    expect(browser.cookies.get(SESSION)).not.toBe(oldCookie);

    await browser.request('/api/c');
    expect(refreshGrants(rotating).length).toBe(grantsBefore + 1);
  });

  it('collapses 100 parallel calls with an expired token into one refresh, with rotation and reuse detection on', async () => {
    const time = clock();
    const { app } = await bffFor(rotating, upstream, { clock: time });
    const browser = new TestBrowser(app);
    await browser.login();
    const staleCookie = browser.cookieHeader();
    const grantsBefore = refreshGrants(rotating).length;
    time.advance(120);

    const responses = await Promise.all(Array.from({ length: 100 }, (_, i) => browser.request(`/api/storm/${i}`, { headers: { cookie: staleCookie } })));
    expect(responses.map((r) => r.statusCode)).toEqual(Array(100).fill(200));
    expect(refreshGrants(rotating).length - grantsBefore).toBe(1);
    for (const response of responses) {
      expect(([] as string[]).concat(response.headers['set-cookie'] ?? []).some((c) => c.startsWith(`${SESSION}=`))).toBe(true);
    }

    // Another tab still holding the cookie from before the refresh: no second refresh, no reuse.
    const lateTab = await browser.request('/api/late', { headers: { cookie: staleCookie } });
    expect(lateTab.statusCode).toBe(200);
    expect(refreshGrants(rotating).length - grantsBefore).toBe(1);
    expect(refreshGrants(rotating).every((r) => r.status === 200)).toBe(true);
    // And the session goes on with the rotated refresh token.
    time.advance(120);
    expect((await browser.request('/api/after')).statusCode).toBe(200);
    expect(refreshGrants(rotating).length - grantsBefore).toBe(2);
  });

  it('keeps the same refresh token when the provider does not rotate', async () => {
    const time = clock();
    const { app } = await bffFor(nonRotating, nonRotatingUpstream, { clock: time });
    const browser = new TestBrowser(app);
    await browser.login();
    const before = refreshGrants(nonRotating).length;
    for (let i = 0; i < 3; i++) {
      time.advance(120);
      expect((await browser.request(`/api/round/${i}`)).statusCode).toBe(200);
    }
    expect(refreshGrants(nonRotating).length - before).toBe(3);
    expect(refreshGrants(nonRotating).every((r) => r.status === 200)).toBe(true);
  });
});

describe('reactive refresh after an upstream 401', () => {
  it('refreshes and replays a POST with its JSON body once', async () => {
    const { app } = await bffFor(rotating, upstream);
    const browser = new TestBrowser(app);
    await browser.login({ login: 'replay-user' });
    await browser.request('/api/warm');
    await rotating.revokeAccessTokensOf('replay-user');
    const from = upstream.requests.length;

    const response = await browser.request('/api/orders', { method: 'POST', payload: { item: 'book', qty: 2 } });
    expect(response.statusCode).toBe(200);
    const seen = upstream.requests.slice(from);
    expect(seen).toHaveLength(2);
    expect(seen[0]!.tokenActive).toBe(false);
    expect(seen[1]!.tokenActive).toBe(true);
    expect(seen[0]!.headers.authorization).not.toBe(seen[1]!.headers.authorization);
    expect(JSON.parse(seen[0]!.body.toString())).toEqual({ item: 'book', qty: 2 });
    expect(seen[1]!.body.equals(seen[0]!.body)).toBe(true);
    expect(response.json<EchoBody>().sub).toBe('replay-user');
  });

  it('does not replay a body larger than the replay limit, answers token_rejected and renews the token', async () => {
    const { app } = await bffFor(rotating, upstream, { extra: { refresh: { replayBodyLimitBytes: 1024 } } });
    const browser = new TestBrowser(app);
    await browser.login({ login: 'big-upload-user' });
    await browser.request('/api/warm');
    await rotating.revokeAccessTokensOf('big-upload-user');
    const from = upstream.requests.length;

    const response = await browser.request('/api/upload', {
      method: 'POST',
      payload: Buffer.alloc(4096, 7),
      headers: { 'content-type': 'application/octet-stream' },
    });
    expect(response.statusCode).toBe(401);
    expect(response.json().error).toBe('token_rejected');
    expect(upstream.requests.length - from).toBe(1);
    expect(upstream.requests[from]!.body.length).toBe(4096);
    expect((await browser.request('/api/next')).statusCode).toBe(200);
  });

  it('passes a second 401 on instead of looping', async () => {
    const { app } = await bffFor(rotating, upstream);
    const browser = new TestBrowser(app);
    await browser.login();
    const from = upstream.requests.length;
    const response = await browser.request('/api/status/401');
    expect(response.statusCode).toBe(401);
    expect(upstream.requests.length - from).toBe(2);
  });
});

describe('failed refresh', () => {
  it('ends the session with login_required when the provider revoked the grant (invalid_grant)', async () => {
    const time = clock();
    const { app } = await bffFor(rotating, upstream, { clock: time });
    const browser = new TestBrowser(app);
    await browser.login({ login: 'revoked-user' });
    await rotating.revokeGrantsOf('revoked-user');
    time.advance(120);
    const before = upstream.requests.length;
    const response = await browser.request('/api/orders');
    expect(response.statusCode).toBe(401);
    expect(response.json().error).toBe('login_required');
    expect(upstream.requests.length).toBe(before);
    expect(browser.cookies.get(SESSION)).toBeUndefined();
  });

  it('keeps the session with 503 idp_unavailable while the provider is down, and recovers', async () => {
    const time = clock();
    const { app } = await bffFor(rotating, upstream, { clock: time });
    const browser = new TestBrowser(app);
    await browser.login();
    time.advance(120);
    await rotating.pause();
    try {
      const response = await browser.request('/api/orders');
      expect(response.statusCode).toBe(503);
      expect(response.json().error).toBe('idp_unavailable');
      expect(Number(response.headers['retry-after'])).toBeGreaterThan(0);
      expect(browser.cookies.get(SESSION)).toBeDefined();
    } finally {
      await rotating.resume();
    }
    expect((await browser.request('/api/orders')).statusCode).toBe(200);
  });

  it('answers 503 idp_unavailable while the provider is slower than oidc.timeoutMs, then uses the late result without reusing the token', async () => {
    const time = clock();
    const { app } = await bffFor(rotating, upstream, { clock: time, oidc: { timeoutMs: 300 } });
    const browser = new TestBrowser(app);
    await browser.login();
    time.advance(120);
    const succeededBefore = refreshGrants(rotating).filter((r) => r.status === 200).length;
    const failedBefore = refreshGrants(rotating).filter((r) => r.status !== 200).length;
    // Latency injected in front of the real provider's token endpoint (it cannot be slow by itself).
    rotating.setLatency('/token', 800);
    try {
      const response = await browser.request('/api/orders');
      expect(response.statusCode).toBe(503);
      expect(response.json().error).toBe('idp_unavailable');
      expect(browser.cookies.get(SESSION)).toBeDefined();
    } finally {
      rotating.setLatency('/token', 0);
    }
    // The refresh went on after the 503 and completed at the provider (spending the refresh
    // token there): the next call uses that late result instead of reusing the spent token.
    await expect.poll(() => refreshGrants(rotating).filter((r) => r.status === 200).length, { timeout: 5000 }).toBe(succeededBefore + 1);
    expect((await browser.request('/api/orders')).statusCode).toBe(200);
    expect(refreshGrants(rotating).filter((r) => r.status === 200).length).toBe(succeededBefore + 1);
    expect(refreshGrants(rotating).filter((r) => r.status !== 200).length).toBe(failedBefore);
  });

  it('answers 503 and logs a configuration fault when the client is not allowed to refresh', async () => {
    const time = clock();
    const instance = await bffFor(rotating, upstream, { clock: time });
    const browser = new TestBrowser(instance.app);
    await browser.login();
    time.advance(120);
    // Break the client's secret at the BFF side: the provider answers invalid_client.
    const broken = await bffFor(rotating, upstream, {
      clock: time,
      oidc: { clientSecret: 'wrong-secret-wrong-secret-wrong-secret' },
    });
    const stranger = new TestBrowser(broken.app);
    stranger.cookies.set(SESSION, browser.cookies.get(SESSION)!);
    const response = await stranger.request('/api/orders');
    expect(response.statusCode).toBe(503);
    expect(broken.logs.some((l) => l.level === 50 && String(l.msg).includes('configuration fault'))).toBe(true);
    expect(stranger.cookies.get(SESSION)).toBeDefined();
  });
});

describe('POST /auth/refresh', () => {
  it('refreshes now and answers the new session times', async () => {
    const { app } = await bffFor(rotating, upstream);
    const browser = new TestBrowser(app);
    await browser.login();
    const before = refreshGrants(rotating).length;
    const response = await browser.request('/auth/refresh', { method: 'POST' });
    expect(response.statusCode).toBe(200);
    expect(response.json().session.refreshedAt).not.toBeNull();
    expect(refreshGrants(rotating).length).toBe(before + 1);
  });

  it('requires the CSRF header', async () => {
    const { app } = await bffFor(rotating, upstream);
    const browser = new TestBrowser(app);
    await browser.login();
    expect((await browser.request('/auth/refresh', { method: 'POST', csrf: false })).statusCode).toBe(403);
  });
});

describe('routes without a user token', () => {
  it('token: client attaches a cached client-credentials token', async () => {
    const { app } = await bffFor(rotating, upstream);
    const browser = new TestBrowser(app);
    const before = rotating.tokenRequests.filter((r) => r.grantType === 'client_credentials').length;
    const first = await browser.request('/client-api/reports');
    const second = await browser.request('/client-api/reports');
    expect(first.statusCode).toBe(200);
    expect(second.statusCode).toBe(200);
    expect(lastUpstreamRequest(upstream).tokenActive).toBe(true);
    expect(lastUpstreamRequest(upstream).introspection?.client_id).toBe(rotating.clients.basic.clientId);
    expect(rotating.tokenRequests.filter((r) => r.grantType === 'client_credentials').length - before).toBe(1);
  });

  it('token: client refuses a path with a dot-dot after a slash with 400, without calling the upstream', async () => {
    const { app } = await bffFor(rotating, upstream);
    const before = upstream.requests.length;
    const response = await new TestBrowser(app).request('/client-api/..x');
    expect(response.statusCode).toBe(400);
    expect(response.json().error).toBe('bad_request');
    expect(upstream.requests.length).toBe(before);
  });

  it('token: none proxies without a session and without a token', async () => {
    const { app } = await bffFor(rotating, upstream);
    const response = await new TestBrowser(app).request('/public-api/status');
    expect(response.statusCode).toBe(200);
    expect(lastUpstreamRequest(upstream).headers.authorization).toBeUndefined();
  });
});
