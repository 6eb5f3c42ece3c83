import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startProvider, type TestProvider } from './support/provider.js';
import { startUpstream, type EchoBody, type Upstream } from './support/upstream.js';
import { completeProviderLogin, CookieJar } from './support/browser.js';
import { PUBLIC_URL, REDIRECT_URI, SECRET, startBff, TestBrowser, type TestBff } from './support/bff.js';
import { rawHttp, rawRequest } from './support/hostile.js';

const SILVER = 'urn:mace:incommon:iap:silver';
const GOLD = 'urn:example:gold';
const SESSION = '__Host-th_session';

let provider: TestProvider;
let parProvider: TestProvider;
let upstream: Upstream;
const started: TestBff[] = [];

beforeAll(async () => {
  const accounts = { 'admin-ann': { groups: ['admin', 'staff'] }, bob: { groups: ['staff'] } };
  provider = await startProvider({ redirectUris: [REDIRECT_URI], accounts, acrValues: [SILVER, GOLD] });
  parProvider = await startProvider({ redirectUris: [REDIRECT_URI], accounts, acrValues: [SILVER, GOLD], pushedAuthorizationRequests: 'required' });
  upstream = await startUpstream({
    introspectionEndpoint: provider.endpoints.introspection,
    clientId: provider.clients.api.clientId,
    clientSecret: provider.clients.api.clientSecret,
  });
});

afterAll(async () => {
  for (const bff of started) await bff.app.close();
  await upstream.close();
  await provider.stop();
  await parProvider.stop();
});

async function bff(options: { now?: () => number; op?: TestProvider } = {}): Promise<TestBff> {
  const op = options.op ?? provider;
  const instance = await startBff(
    {
      oidc: { issuer: op.issuer, clientId: op.clients.basic.clientId, clientSecret: op.clients.basic.clientSecret, allowedAcrValues: [GOLD] },
      session: { store: 'memory', secrets: [SECRET] },
      routes: [
        { prefix: '/api', upstream: upstream.url },
        { prefix: '/admin', upstream: upstream.url, require: { claims: { groups: ['admin'] } } },
        { prefix: '/secure', upstream: upstream.url, require: { acr: [SILVER] } },
        { prefix: '/recent', upstream: upstream.url, require: { maxAgeSeconds: 300 } },
        { prefix: '/me', upstream: upstream.url, identityHeaders: { 'X-User-Sub': 'sub', 'X-User-Email': 'email', 'X-User-Groups': 'groups' } },
        { prefix: '/public', upstream: `${upstream.url}/public`, token: 'none' },
      ],
    },
    options.now ? { now: options.now } : {},
  );
  started.push(instance);
  return instance;
}

/** Signs in through the provider with `jar` (the provider's cookies: its session survives for a step-up). */
async function signIn(browser: TestBrowser, jar: CookieJar, login: string, loginPath = '/auth/login'): Promise<void> {
  const start = await browser.request(loginPath, { csrf: false });
  expect(start.statusCode).toBe(302);
  const callback = await browser.callback(await completeProviderLogin(String(start.headers.location), { jar, login }));
  expect(callback.statusCode).toBe(302);
}

const upstreamCalls = (path: string) => upstream.requests.filter((request) => request.url.startsWith(path)).length;

async function sessionIds(browser: TestBrowser): Promise<string[]> {
  const list = await browser.request('/auth/sessions', { csrf: false });
  expect(list.statusCode).toBe(200);
  return list.json<Array<{ id: string }>>().map((s) => s.id);
}

describe('claims a route requires', () => {
  it('lets a member of the admin group call the admin-only API', async () => {
    const { app } = await bff();
    const browser = new TestBrowser(app);
    await signIn(browser, new CookieJar(), 'admin-ann');
    const response = await browser.request('/admin/reports');
    expect(response.statusCode).toBe(200);
    expect(response.json<EchoBody>().sub).toBe('admin-ann');
  });

  it('refuses a user outside the admin group with 403 insufficient_claims, without calling the API', async () => {
    const { app } = await bff();
    const browser = new TestBrowser(app);
    await signIn(browser, new CookieJar(), 'bob');
    const before = upstreamCalls('/reports');
    const response = await browser.request('/admin/reports', { method: 'POST', payload: { report: 'all' } });
    expect(response.statusCode).toBe(403);
    expect(response.json()).toMatchObject({ error: 'insufficient_claims' });
    expect(upstreamCalls('/reports')).toBe(before);
  });
});

describe('a route policy before the request body', () => {
  it('refuses an upload from a user outside the admin group with 403 before the body is sent', async () => {
    const instance = await bff();
    const browser = new TestBrowser(instance.app);
    await signIn(browser, new CookieJar(), 'bob');
    await instance.app.listen({ host: '127.0.0.1', port: 0 });
    const address = instance.app.server.address();
    const port = typeof address === 'object' && address ? address.port : 0;
    // Only the head goes out, announcing 500 kB that never come: the answer cannot wait for them.
    const head = rawRequest('POST', '/admin/upload', [['Cookie', browser.cookieHeader()], ['X-CSRF', '1'], ['Content-Type', 'text/plain'], ['Content-Length', '500000']]);
    const response = await rawHttp(port, head, 3000);
    expect(response.status).toBe(403);
    expect(JSON.parse(response.body).error).toBe('insufficient_claims');
  });
});

describe('step-up authentication', () => {
  it('asks a session signed in without the required acr to step up, without calling the API', async () => {
    const { app } = await bff();
    const browser = new TestBrowser(app);
    await signIn(browser, new CookieJar(), 'alice');
    const before = upstreamCalls('/payments');
    const response = await browser.request('/secure/payments', { headers: { referer: `${PUBLIC_URL}/pay?step=2` } });
    expect(response.statusCode).toBe(401);
    const body = response.json<Record<string, unknown>>();
    expect(body).toMatchObject({ error: 'step_up_required', acr_values: SILVER });
    expect(body.max_age).toBeUndefined();
    const loginUrl = new URL(String(body.login_url), PUBLIC_URL);
    expect(loginUrl.pathname).toBe('/auth/login');
    expect(loginUrl.searchParams.get('acr_values')).toBe(SILVER);
    expect(loginUrl.searchParams.get('returnTo')).toBe('/pay?step=2');
    expect(upstreamCalls('/payments')).toBe(before);
  });

  it('after the step-up login the same session reaches the API with the stronger acr', async () => {
    const { app } = await bff();
    const browser = new TestBrowser(app);
    const jar = new CookieJar();
    await signIn(browser, jar, 'alice');
    const [sessionBefore] = await sessionIds(browser);
    const stepUp = (await browser.request('/secure/payments')).json<{ login_url: string }>();

    const start = await browser.request(stepUp.login_url, { csrf: false });
    const authorization = new URL(String(start.headers.location));
    expect(authorization.searchParams.get('acr_values')).toBe(SILVER);
    // The provider already has a session for alice: it signs her in again for the stronger acr.
    const callback = await browser.callback(await completeProviderLogin(authorization.href, { jar, login: 'alice' }));
    expect(callback.statusCode).toBe(302);

    expect(await sessionIds(browser)).toEqual([sessionBefore]);
    const user = (await browser.request('/auth/user', { csrf: false })).json<{ claims: Record<string, unknown> }>();
    expect(user.claims).toMatchObject({ sub: 'alice', acr: SILVER });
    const response = await browser.request('/secure/payments');
    expect(response.statusCode).toBe(200);
    expect(response.json<EchoBody>().sub).toBe('alice');
  });

  it('asks a session signed in longer ago than maxAgeSeconds to sign in again with max_age', async () => {
    let offsetMs = 0;
    const { app } = await bff({ now: () => Date.now() + offsetMs });
    const browser = new TestBrowser(app);
    await signIn(browser, new CookieJar(), 'alice', '/auth/login?max_age=600');
    expect((await browser.request('/recent/profile')).statusCode).toBe(200);

    offsetMs = 301_000;
    const before = upstreamCalls('/profile');
    const response = await browser.request('/recent/profile');
    expect(response.statusCode).toBe(401);
    const body = response.json<Record<string, unknown>>();
    expect(body).toMatchObject({ error: 'step_up_required', max_age: 300 });
    expect(body.acr_values).toBeUndefined();
    expect(new URL(String(body.login_url), PUBLIC_URL).searchParams.get('max_age')).toBe('300');
    expect(upstreamCalls('/profile')).toBe(before);
  });

  it('a different user signing in at the step-up gets a new session, and the old one ends', async () => {
    const { app } = await bff();
    const browser = new TestBrowser(app);
    const jar = new CookieJar();
    await signIn(browser, jar, 'alice');
    const aliceCookie = browser.cookies.get(SESSION)!;
    const [aliceSession] = await sessionIds(browser);
    const stepUp = (await browser.request('/secure/payments')).json<{ login_url: string }>();

    await signIn(browser, jar, 'bob', stepUp.login_url);

    const user = (await browser.request('/auth/user', { csrf: false })).json<{ claims: Record<string, unknown> }>();
    expect(user.claims.sub).toBe('bob');
    expect(await sessionIds(browser)).not.toContain(aliceSession);
    const oldCookie = await browser.request('/auth/user', { csrf: false, headers: { cookie: `${SESSION}=${aliceCookie}` } });
    expect(oldCookie.statusCode).toBe(401);
  });
});

describe('login parameters', () => {
  it('passes prompt, login_hint, ui_locales, acr_values and max_age to the provider', async () => {
    const { app } = await bff();
    const browser = new TestBrowser(app);
    const query = new URLSearchParams({ prompt: 'login', login_hint: 'alice@example.test', ui_locales: 'de-CH en', acr_values: `${GOLD} ${SILVER}`, max_age: '600' });
    const start = await browser.request(`/auth/login?${query}`, { csrf: false });
    expect(start.statusCode).toBe(302);
    const authorization = new URL(String(start.headers.location));
    expect(`${authorization.origin}${authorization.pathname}`).toBe(provider.endpoints.authorization);
    for (const [name, value] of query) expect(authorization.searchParams.get(name)).toBe(value);
  });

  it('with pushed authorization requests, the asked acr reaches the provider and comes back in the session', async () => {
    const { app } = await bff({ op: parProvider });
    const browser = new TestBrowser(app);
    const start = await browser.request(`/auth/login?acr_values=${encodeURIComponent(GOLD)}`, { csrf: false });
    const authorization = new URL(String(start.headers.location));
    expect(authorization.searchParams.get('request_uri')).toMatch(/^urn:ietf:params:oauth:request_uri:/);
    expect(authorization.searchParams.get('acr_values')).toBeNull();
    await browser.callback(await completeProviderLogin(authorization.href, { login: 'alice' }));
    const user = (await browser.request('/auth/user', { csrf: false })).json<{ claims: Record<string, unknown> }>();
    expect(user.claims.acr).toBe(GOLD);
  });

  it.each([
    ['prompt=none%20login', 'prompt=none combined with another value'],
    ['prompt=evil', 'an unknown prompt'],
    ['prompt=login&prompt=consent', 'a parameter given twice'],
    ['login_hint=alice%0D%0ASet-Cookie:%20x=1', 'a login_hint with a line break'],
    [`login_hint=${'a'.repeat(300)}`, 'a login_hint of 300 characters'],
    ['ui_locales=%3Cscript%3E', 'ui_locales that are not language tags'],
    ['acr_values=urn:example:platinum', 'an acr value nobody configured'],
    ['max_age=-1', 'a negative max_age'],
    ['max_age=1e3', 'a max_age that is not whole seconds'],
    ['max_age=', 'an empty max_age'],
  ])('refuses %s (%s) with 400 JSON and no redirect to the provider', async (query) => {
    const { app } = await bff();
    const browser = new TestBrowser(app);
    const before = provider.requests.length;
    const response = await browser.request(`/auth/login?${query}`, { csrf: false });
    expect(response.statusCode).toBe(400);
    expect(response.headers['content-type']).toMatch(/^application\/json/);
    expect(response.json()).toMatchObject({ error: 'bad_request' });
    expect(provider.requests.length).toBe(before);
  });

  it('a silent login the provider cannot complete comes back to the page with error=login_required and no session', async () => {
    const { app } = await bff();
    const browser = new TestBrowser(app);
    const start = await browser.request(`/auth/login?prompt=none&returnTo=${encodeURIComponent('/orders?tab=open')}`, { csrf: false });
    const refused = await completeProviderLogin(String(start.headers.location), { jar: new CookieJar() });
    expect(new URL(refused).searchParams.get('error')).toBe('login_required');
    const callback = await browser.callback(refused);
    expect(callback.statusCode).toBe(302);
    expect(callback.headers.location).toBe('/orders?tab=open&error=login_required');
    expect(browser.cookies.get(SESSION)).toBeUndefined();
    expect((await browser.request('/auth/user', { csrf: false })).statusCode).toBe(401);
  });

  it('a silent login with a provider session signs the user in without a page', async () => {
    const { app } = await bff();
    const jar = new CookieJar();
    await signIn(new TestBrowser(app), jar, 'alice');
    const browser = new TestBrowser(app);
    const start = await browser.request('/auth/login?prompt=none&returnTo=/home', { csrf: false });
    const callback = await browser.callback(await completeProviderLogin(String(start.headers.location), { jar, maxSteps: 3 }));
    expect(callback.headers.location).toBe('/home');
    expect((await browser.request('/auth/user', { csrf: false })).json<{ claims: { sub: string } }>().claims.sub).toBe('alice');
  });
});

describe('identity headers', () => {
  it("sends the user's claims to the upstream in the configured headers", async () => {
    const { app } = await bff();
    const browser = new TestBrowser(app);
    await signIn(browser, new CookieJar(), 'admin-ann');
    const echo = (await browser.request('/me/whoami')).json<EchoBody>();
    expect(echo.headers['x-user-sub']).toBe('admin-ann');
    expect(echo.headers['x-user-email']).toBe('admin-ann@example.test');
    expect(echo.headers['x-user-groups']).toBe('admin, staff');
  });

  it('replaces a browser-sent X-User-Sub with the signed-in user on the route that sets it', async () => {
    const { app } = await bff();
    const browser = new TestBrowser(app);
    await signIn(browser, new CookieJar(), 'alice');
    const echo = (await browser.request('/me/whoami', { headers: { 'x-user-sub': 'admin-ann', 'X-User-Groups': 'admin' } })).json<EchoBody>();
    expect(echo.headers['x-user-sub']).toBe('alice');
    // alice has no groups claim: no header at all, never the browser's.
    expect(echo.headers['x-user-groups']).toBeUndefined();
  });

  it.each(['/api/orders', '/public/orders'])('drops a browser-sent X-User-Sub on %s, a route without identity headers', async (path) => {
    const { app } = await bff();
    const browser = new TestBrowser(app);
    await signIn(browser, new CookieJar(), 'alice');
    const response = await browser.request(path, { headers: { 'X-User-Sub': 'admin-ann', 'x-user-email': 'root@example.test' } });
    expect(response.statusCode).toBe(200);
    const echo = response.json<EchoBody>();
    expect(echo.headers['x-user-sub']).toBeUndefined();
    expect(echo.headers['x-user-email']).toBeUndefined();
  });
});
