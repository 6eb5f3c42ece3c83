import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startProvider, type TestProvider } from './support/provider.js';
import { completeProviderLogin } from './support/browser.js';
import { REDIRECT_URI, SECRET, startBff, TestBrowser, type TestBff } from './support/bff.js';
import { Sealer } from '../src/state/sealer.js';

const SESSION = '__Host-th_session';
const BIG_BIO = 'x'.repeat(6000);

let provider: TestProvider;
const started: TestBff[] = [];

beforeAll(async () => {
  provider = await startProvider({
    redirectUris: [REDIRECT_URI],
    accounts: { 'big-claims': { bio: BIG_BIO } },
  });
});

afterAll(async () => {
  for (const bff of started) await bff.app.close();
  await provider.stop();
});

type ClientKind = 'basic' | 'post' | 'jwt' | 'publicClient';

function oidcFor(kind: ClientKind): Record<string, unknown> {
  const base = { issuer: provider.issuer, scopes: ['openid', 'profile', 'email', 'offline_access'] };
  switch (kind) {
    case 'basic':
      return { ...base, clientId: provider.clients.basic.clientId, clientSecret: provider.clients.basic.clientSecret, clientAuth: 'client_secret_basic' };
    case 'post':
      return { ...base, clientId: provider.clients.post.clientId, clientSecret: provider.clients.post.clientSecret, clientAuth: 'client_secret_post' };
    case 'jwt':
      return { ...base, clientId: provider.clients.jwt.clientId, privateKeyJwk: provider.clients.jwt.privateKeyJwk, clientAuth: 'private_key_jwt' };
    case 'publicClient':
      return { ...base, clientId: provider.clients.publicClient.clientId, clientAuth: 'none' };
  }
}

async function bff(options: { client?: ClientKind; session?: Record<string, unknown>; now?: () => number } = {}): Promise<TestBff> {
  const instance = await startBff(
    { oidc: oidcFor(options.client ?? 'basic'), session: { secrets: [SECRET], ...options.session } },
    options.now ? { now: options.now } : {},
  );
  started.push(instance);
  return instance;
}

function sessionCookieOf(browser: TestBrowser): string | undefined {
  return browser.cookies.get(SESSION);
}

describe('login', () => {
  it.each<ClientKind>(['basic', 'post', 'jwt', 'publicClient'])('signs the user in with client authentication %s', async (kind) => {
    const { app } = await bff({ client: kind });
    const browser = new TestBrowser(app);
    const callback = await browser.login({ returnTo: '/orders?tab=open' });
    expect(callback.statusCode).toBe(302);
    expect(callback.headers.location).toBe('/orders?tab=open');
    const user = await browser.request('/auth/user', { csrf: false });
    expect(user.statusCode).toBe(200);
    expect(user.json().claims.sub).toBe('alice');
  });

  it('shows the user their claims without the ID token protocol fields (nonce, at_hash)', async () => {
    const { app } = await bff();
    const browser = new TestBrowser(app);
    await browser.login();
    const claims = (await browser.request('/auth/user', { csrf: false })).json<{ claims: Record<string, unknown> }>().claims;
    expect(claims.sub).toBe('alice');
    for (const protocolField of ['nonce', 'at_hash', 'c_hash', 's_hash']) expect(claims).not.toHaveProperty(protocolField);
  });

  it('shows the protocol fields the operator chose to keep (session.omitClaims: [])', async () => {
    const { app } = await bff({ session: { omitClaims: [] } });
    const browser = new TestBrowser(app);
    await browser.login();
    const claims = (await browser.request('/auth/user', { csrf: false })).json<{ claims: Record<string, unknown> }>().claims;
    expect(claims.nonce).toBeTypeOf('string');
  });

  it('starts the code flow with PKCE S256, state and nonce', async () => {
    const { app } = await bff();
    const location = new URL(await new TestBrowser(app).startLogin('/'));
    expect(location.origin).toBe(provider.issuer);
    expect(location.searchParams.get('response_type')).toBe('code');
    expect(location.searchParams.get('code_challenge_method')).toBe('S256');
    expect(location.searchParams.get('code_challenge')).toMatch(/^[\w-]{43}$/);
    expect(location.searchParams.get('state')).toMatch(/^[\w-]{20,}$/);
    expect(location.searchParams.get('nonce')).toMatch(/^[\w-]{20,}$/);
    expect(location.searchParams.get('redirect_uri')).toBe(REDIRECT_URI);
  });

  it('sets a __Host- session cookie that is Secure, HttpOnly, SameSite=Strict, Path=/ and has no Domain', async () => {
    const { app } = await bff();
    const browser = new TestBrowser(app);
    const callback = await browser.login();
    const header = ([] as string[]).concat(callback.headers['set-cookie'] ?? []).find((c) => c.startsWith(`${SESSION}=`));
    expect(header).toBeDefined();
    expect(header).toMatch(/; Secure/);
    expect(header).toMatch(/; HttpOnly/);
    expect(header).toMatch(/; SameSite=Strict/);
    expect(header).toMatch(/; Path=\//);
    expect(header).not.toMatch(/Domain=/i);
  });

  it('keeps the pending login in its own SameSite=Lax cookie named after the state', async () => {
    const { app } = await bff();
    const browser = new TestBrowser(app);
    const response = await browser.request('/auth/login', { csrf: false });
    const state = new URL(String(response.headers.location)).searchParams.get('state');
    const pending = ([] as string[]).concat(response.headers['set-cookie'] ?? []).find((c) => c.startsWith(`${SESSION}_login.${state}=`));
    expect(pending).toMatch(/; HttpOnly/);
    expect(pending).toMatch(/; Secure/);
    expect(pending).toMatch(/; SameSite=Lax/);
  });

  it('lets two tabs log in at once, finishing in either order', async () => {
    const { app } = await bff();
    const browser = new TestBrowser(app);
    const first = await browser.startLogin('/first');
    const second = await browser.startLogin('/second');
    const secondCallback = await completeProviderLogin(second);
    const firstCallback = await completeProviderLogin(first);
    expect((await browser.callback(secondCallback)).headers.location).toBe('/second');
    expect((await browser.callback(firstCallback)).headers.location).toBe('/first');
    expect((await browser.request('/auth/user', { csrf: false })).statusCode).toBe(200);
  });

  it('keeps at most five pending logins per browser, dropping the oldest', async () => {
    const { app } = await bff();
    const browser = new TestBrowser(app);
    const urls: string[] = [];
    for (let i = 0; i < 8; i++) urls.push(await browser.startLogin(`/tab${i}`));
    const pending = [...browser.cookies.keys()].filter((name) => name.startsWith(`${SESSION}_login.`));
    expect(pending).toHaveLength(5);
    // The newest still completes; the oldest was dropped.
    expect((await browser.callback(await completeProviderLogin(urls[7]!))).headers.location).toBe('/tab7');
    const dropped = await browser.callback(await completeProviderLogin(urls[0]!));
    expect(dropped.statusCode).toBe(400);
  });

  it.each([
    ['//evil.example'],
    ['https://evil.example'],
    ['/\\evil.example'],
    ['javascript:alert(1)'],
    ['/%2F%2Fevil.example'],
  ])('sends the user to / instead of the hostile returnTo %s', async (hostile) => {
    const { app } = await bff();
    const callback = await new TestBrowser(app).login({ returnTo: hostile });
    expect(callback.headers.location).toBe('/');
  });

  it('answers an API-style 401 login_required, never a redirect, when there is no session', async () => {
    const { app } = await bff();
    const response = await new TestBrowser(app).request('/auth/user', { csrf: false });
    expect(response.statusCode).toBe(401);
    expect(response.json()).toEqual({ error: 'login_required', error_description: expect.any(String) });
  });
});

describe('abuse limits', () => {
  it('answers 429 too_many_requests once an address exceeds loginPerMinute, leaving other addresses alone', async () => {
    const instance = await startBff({ oidc: oidcFor('basic'), session: { secrets: [SECRET] }, rateLimit: { loginPerMinute: 3 } });
    started.push(instance);
    const from = (remoteAddress: string) => instance.app.inject({ method: 'GET', url: '/auth/login', remoteAddress });
    for (let i = 0; i < 3; i++) expect((await from('192.0.2.10')).statusCode).toBe(302);
    const limited = await from('192.0.2.10');
    expect(limited.statusCode).toBe(429);
    expect(limited.json()).toEqual({ error: 'too_many_requests', error_description: expect.stringContaining('try again') });
    expect(Number(limited.headers['retry-after'])).toBeGreaterThan(0);
    expect((await from('192.0.2.11')).statusCode).toBe(302);
  });

  it('answers 429 once an address exceeds callbackPerMinute', async () => {
    const instance = await startBff({ oidc: oidcFor('basic'), session: { secrets: [SECRET] }, rateLimit: { callbackPerMinute: 2 } });
    started.push(instance);
    const callback = () => instance.app.inject({ method: 'GET', url: '/auth/callback?state=x&code=y', remoteAddress: '192.0.2.20' });
    expect((await callback()).statusCode).toBe(400);
    expect((await callback()).statusCode).toBe(400);
    expect((await callback()).statusCode).toBe(429);
  });
});

describe('callback validation', () => {
  it('refuses a callback whose state was never issued here', async () => {
    const { app } = await bff();
    const browser = new TestBrowser(app);
    const callbackUrl = await completeProviderLogin(await new TestBrowser(app).startLogin('/'));
    const response = await browser.callback(callbackUrl);
    expect(response.statusCode).toBe(400);
    expect(response.json().error).toBe('bad_request');
    expect(sessionCookieOf(browser)).toBeUndefined();
  });

  it('refuses a forged state even with a pending login present', async () => {
    const { app } = await bff();
    const browser = new TestBrowser(app);
    const callbackUrl = new URL(await completeProviderLogin(await browser.startLogin('/')));
    callbackUrl.searchParams.set('state', 'forged-state-forged-state-forged-state-00');
    const response = await browser.callback(callbackUrl.href);
    expect(response.statusCode).toBe(400);
  });

  it('refuses a replayed callback', async () => {
    const { app } = await bff();
    const browser = new TestBrowser(app);
    const callbackUrl = await completeProviderLogin(await browser.startLogin('/'));
    const pendingCookies = new Map(browser.cookies);
    expect((await browser.callback(callbackUrl)).statusCode).toBe(302);
    // An attacker replays both the callback URL and the (captured) pending-login cookie.
    const attacker = new TestBrowser(app);
    for (const [name, value] of pendingCookies) attacker.cookies.set(name, value);
    const replay = await attacker.callback(callbackUrl);
    expect(replay.statusCode).toBe(400);
    expect(replay.json().error_description).toMatch(/invalid_grant/);
    expect(sessionCookieOf(attacker)).toBeUndefined();
  });

  it('refuses an ID token whose nonce does not match the login', async () => {
    const { app } = await bff();
    const browser = new TestBrowser(app);
    const authorizationUrl = await browser.startLogin('/');
    const state = new URL(authorizationUrl).searchParams.get('state')!;
    const name = `${SESSION}_login.${state}`;
    const sealer = new Sealer([SECRET]);
    const pending = await sealer.unseal<Record<string, unknown>>(browser.cookies.get(name)!);
    browser.cookies.set(name, await sealer.seal({ ...pending, nonce: 'another-nonce-another-nonce-another' }, 600));
    const response = await browser.callback(await completeProviderLogin(authorizationUrl));
    expect(response.statusCode).toBe(400);
    expect(sessionCookieOf(browser)).toBeUndefined();
  });

  it('answers a clear 400 when the user denies consent at the provider', async () => {
    const { app } = await bff();
    const browser = new TestBrowser(app);
    const callbackUrl = await completeProviderLogin(await browser.startLogin('/'), { consent: false });
    expect(new URL(callbackUrl).searchParams.get('error')).toBe('access_denied');
    const response = await browser.callback(callbackUrl);
    expect(response.statusCode).toBe(400);
    expect(response.json()).toEqual({ error: 'bad_request', error_description: expect.stringContaining('access_denied') });
  });

  it('refuses a callback that arrives after the pending login expired', async () => {
    let now = Date.now();
    const { app } = await bff({ now: () => now, session: { pendingLoginTimeoutSeconds: 120 } });
    const browser = new TestBrowser(app);
    const authorizationUrl = await browser.startLogin('/');
    const callbackUrl = await completeProviderLogin(authorizationUrl);
    now += 121_000;
    const response = await browser.callback(callbackUrl);
    expect(response.statusCode).toBe(400);
    expect(sessionCookieOf(browser)).toBeUndefined();
  });

  it('answers 400 for a callback with duplicated or missing state', async () => {
    const { app } = await bff();
    const browser = new TestBrowser(app);
    expect((await browser.request('/auth/callback?code=x', { csrf: false })).statusCode).toBe(400);
    expect((await browser.request('/auth/callback?code=x&state=a&state=b', { csrf: false })).statusCode).toBe(400);
  });
});

describe('session cookie', () => {
  it.each([
    ['tampered', (v: string) => v.slice(0, 30) + (v[30] === 'A' ? 'B' : 'A') + v.slice(31)],
    ['truncated', (v: string) => v.slice(0, v.length / 2)],
    ['oversized garbage', () => 'A'.repeat(3900)],
    ['empty', () => ''],
  ])('treats a %s cookie as no session and clears it', async (_name, mangle) => {
    const { app } = await bff();
    const browser = new TestBrowser(app);
    await browser.login();
    browser.cookies.set(SESSION, mangle(sessionCookieOf(browser)!));
    const response = await browser.request('/auth/user', { csrf: false });
    expect(response.statusCode).toBe(401);
    expect(response.json().error).toBe('login_required');
    const cleared = ([] as string[]).concat(response.headers['set-cookie'] ?? []).find((c) => c.startsWith(`${SESSION}=`));
    if (sessionCookieOf(browser) !== undefined) expect(cleared).toBeDefined();
  });

  it('treats a valid seal of something that is not a session as no session', async () => {
    const { app } = await bff();
    const browser = new TestBrowser(app);
    browser.cookies.set(SESSION, await new Sealer([SECRET]).seal({ sub: 'admin', admin: true }, 3600));
    expect((await browser.request('/auth/user', { csrf: false })).statusCode).toBe(401);
  });

  it('splits a session with a large ID token into chunks and reads it back', async () => {
    const { app } = await bff();
    const browser = new TestBrowser(app);
    await browser.login({ login: 'big-claims' });
    expect(browser.cookies.has(SESSION)).toBe(false);
    expect(browser.cookies.has(`${SESSION}.0`)).toBe(true);
    expect(browser.cookies.has(`${SESSION}.1`)).toBe(true);
    for (const value of browser.cookies.values()) expect(value.length).toBeLessThanOrEqual(3800);
    const user = await browser.request('/auth/user', { csrf: false });
    expect(user.statusCode).toBe(200);
    expect(user.json().claims.bio).toBe(BIG_BIO);
  });

  it('clears stale chunks when the session shrinks', async () => {
    const { app } = await bff();
    const browser = new TestBrowser(app);
    await browser.login({ login: 'big-claims' });
    const relogin = await browser.login({ login: 'alice' });
    const cleared = ([] as string[]).concat(relogin.headers['set-cookie'] ?? []).filter((c) => /^__Host-th_session\.\d=;/.test(c));
    expect(cleared.length).toBeGreaterThanOrEqual(2);
    expect([...browser.cookies.keys()].filter((n) => n.startsWith(`${SESSION}.`))).toEqual([]);
    expect((await browser.request('/auth/user', { csrf: false })).json().claims.sub).toBe('alice');
  });

  it('still opens a cookie sealed with the previous secret after rotation', async () => {
    const OLD = 'old-secret-old-secret-old-secret-0000001';
    const NEW = 'new-secret-new-secret-new-secret-0000002';
    const before = await bff({ session: { secrets: [OLD] } });
    const browser = new TestBrowser(before.app);
    await browser.login();
    const cookie = sessionCookieOf(browser)!;

    const rotated = await bff({ session: { secrets: [NEW, OLD] } });
    const after = new TestBrowser(rotated.app);
    after.cookies.set(SESSION, cookie);
    expect((await after.request('/auth/user', { csrf: false })).statusCode).toBe(200);

    const retired = await bff({ session: { secrets: [NEW] } });
    const gone = new TestBrowser(retired.app);
    gone.cookies.set(SESSION, cookie);
    expect((await gone.request('/auth/user', { csrf: false })).statusCode).toBe(401);
  });

  it('ends a session left idle past the idle timeout', async () => {
    let now = Date.now();
    const { app } = await bff({ session: { idleTimeoutSeconds: 600, absoluteTimeoutSeconds: 3600 }, now: () => now });
    const browser = new TestBrowser(app);
    await browser.login();
    now += 599_000;
    expect((await browser.request('/auth/user', { csrf: false })).statusCode).toBe(200);
    now += 599_000; // active a moment ago: the idle window slid
    expect((await browser.request('/auth/user', { csrf: false })).statusCode).toBe(200);
    now += 601_000;
    expect((await browser.request('/auth/user', { csrf: false })).statusCode).toBe(401);
  });

  it('slides the idle timeout once for a browser that keeps sending its old cookie: every answer carries the same new cookie', async () => {
    let now = Date.now();
    const { app } = await bff({ session: { idleTimeoutSeconds: 600, absoluteTimeoutSeconds: 3600 }, now: () => now });
    const browser = new TestBrowser(app);
    await browser.login();
    const old = sessionCookieOf(browser)!;
    now += 120_000; // past the touch interval (60 s): the next request slides the idle timeout
    const answers = [];
    for (let i = 0; i < 4; i++) {
      browser.cookies.set(SESSION, old); // as parallel requests already on their way would
      answers.push(await browser.request('/auth/user', { csrf: false }));
    }
    expect(answers.map((a) => a.statusCode)).toEqual([200, 200, 200, 200]);
    const setCookies = answers.map((a) => String(a.headers['set-cookie']));
    expect(new Set(setCookies).size).toBe(1);
    expect(sessionCookieOf(browser)).not.toBe(old);
    // The new cookie carries the slide: no further one until the next interval.
    const next = await browser.request('/auth/user', { csrf: false });
    expect(next.headers['set-cookie']).toBeUndefined();
  });

  it('ends an active session at the absolute timeout', async () => {
    let now = Date.now();
    const { app } = await bff({ session: { idleTimeoutSeconds: 600, absoluteTimeoutSeconds: 1800 }, now: () => now });
    const browser = new TestBrowser(app);
    await browser.login();
    for (let elapsed = 0; elapsed < 1800_000 - 500_000; elapsed += 500_000) {
      now += 500_000;
      expect((await browser.request('/auth/user', { csrf: false })).statusCode).toBe(200);
    }
    now += 500_000;
    expect((await browser.request('/auth/user', { csrf: false })).statusCode).toBe(401);
  });

  it('shows claims and session times on /auth/user but never a token', async () => {
    const { app } = await bff();
    const browser = new TestBrowser(app);
    await browser.login();
    const body = (await browser.request('/auth/user', { csrf: false })).json();
    expect(Object.keys(body.session).sort()).toEqual(
      ['absoluteExpiresAt', 'accessTokenExpiresAt', 'createdAt', 'idleExpiresAt', 'lastSeenAt', 'refreshedAt', 'scope'].sort(),
    );
    const received = browser.received();
    for (const token of provider.issuedTokens()) expect(received).not.toContain(token);
  });
});

describe('logout', () => {
  it('requires the CSRF header', async () => {
    const { app } = await bff();
    const browser = new TestBrowser(app);
    await browser.login();
    const response = await browser.request('/auth/logout', { method: 'POST', csrf: false });
    expect(response.statusCode).toBe(403);
    expect(response.json().error).toBe('csrf_failed');
    expect((await browser.request('/auth/user', { csrf: false })).statusCode).toBe(200);
  });

  it('ends the session, clears the cookie and answers the provider logout URL', async () => {
    const { app } = await bff();
    const browser = new TestBrowser(app);
    await browser.login();
    const response = await browser.request('/auth/logout', { method: 'POST' });
    expect(response.statusCode).toBe(200);
    const logoutUrl = new URL(response.json().logoutUrl);
    expect(logoutUrl.origin).toBe(provider.issuer);
    expect(logoutUrl.searchParams.get('client_id')).toBe(provider.clients.basic.clientId);
    expect(logoutUrl.searchParams.has('id_token_hint')).toBe(false);
    expect(logoutUrl.searchParams.get('post_logout_redirect_uri')).toBe('https://app.example.test/');
    expect(sessionCookieOf(browser)).toBeUndefined();
    expect((await browser.request('/auth/user', { csrf: false })).statusCode).toBe(401);
  });
});

describe('readiness', () => {
  it('is not ready while the provider is down at startup, and becomes ready when it is back', async () => {
    await provider.pause();
    let instance: TestBff | undefined;
    try {
      instance = await startBff({ oidc: oidcFor('basic'), session: { secrets: [SECRET] } }, { waitForProvider: false });
      started.push(instance);
      const notReady = await instance.app.inject('/readyz');
      expect(notReady.statusCode).toBe(503);
      expect(notReady.json().checks.provider).toBe('failing');
      const login = await instance.app.inject('/auth/login');
      expect(login.statusCode).toBe(503);
      expect(login.json().error).toBe('idp_unavailable');
      expect(login.headers['retry-after']).toBeDefined();
    } finally {
      await provider.resume();
    }
    await expect.poll(async () => (await instance!.app.inject('/readyz')).statusCode, { timeout: 10_000, interval: 200 }).toBe(200);
    expect((await instance.app.inject('/healthz')).statusCode).toBe(200);
  });
});
