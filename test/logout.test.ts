import { randomUUID, generateKeyPairSync } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { isTokenActive, startProvider, type TestProvider } from './support/provider.js';
import { CookieJar, completeProviderLogin, completeProviderLogout } from './support/browser.js';
import { startIntrospectingUpstream, type Upstream } from './support/upstream.js';
import { freePort } from './support/ports.js';
import { REDIRECT_URI, SECRET, startBff, TestBrowser, type TestBff } from './support/bff.js';
import { BACKCHANNEL_EVENT, postLogoutToken, signLogoutToken as signLogoutToken_ } from './support/logout-token.js';
import { redisServerInstalled, startRedisServer, uniquePrefix, warnRedisSkipped, type RedisServer } from './support/redis.js';
import { Sealer } from '../src/state/sealer.js';
import type { SessionRecord } from '../src/state/record.js';

const SESSION = '__Host-th_session';
const hasRedis = redisServerInstalled();
if (!hasRedis) warnRedisSkipped('test/logout.test.ts (Redis cases)');

let provider: TestProvider;
let upstream: Upstream;
let redisServer: RedisServer | undefined;
const started: TestBff[] = [];
/** Back-channel logouts reach the instance listening on this port (the provider needs a real URL). */
let backchannelPort: number;

beforeAll(async () => {
  backchannelPort = await freePort();
  provider = await startProvider({
    redirectUris: [REDIRECT_URI],
    backchannelLogoutUri: `http://127.0.0.1:${backchannelPort}/auth/backchannel-logout`,
  });
  upstream = await startIntrospectingUpstream(provider);
  if (hasRedis) redisServer = await startRedisServer();
});

afterAll(async () => {
  for (const bff of started) await bff.app.close();
  await upstream.close();
  await provider.stop();
  await redisServer?.stop();
});

type Store = 'cookie' | 'memory' | 'redis';

async function bff(store: Store, options: { keyPrefix?: string; listen?: boolean } = {}): Promise<TestBff> {
  const instance = await startBff({
    oidc: { issuer: provider.issuer, clientId: provider.clients.basic.clientId, clientSecret: provider.clients.basic.clientSecret },
    session: {
      store,
      secrets: [SECRET],
      ...(store === 'redis' || options.keyPrefix ? { redis: { url: redisServer!.url, keyPrefix: options.keyPrefix ?? uniquePrefix() } } : {}),
    },
    routes: [{ prefix: '/api', upstream: upstream.url }],
  });
  started.push(instance);
  if (options.listen) await instance.app.listen({ host: '127.0.0.1', port: backchannelPort });
  return instance;
}

/** Closes the instance listening for back-channel logouts so the next test can take the port. */
async function stopListening(instance: TestBff): Promise<void> {
  await instance.app.close();
  started.splice(started.indexOf(instance), 1);
}


async function refreshTokenOf(browser: TestBrowser): Promise<string> {
  const record = await new Sealer([SECRET]).unseal<SessionRecord>(browser.cookies.get(SESSION)!);
  return record!.refreshToken!;
}

const signLogoutToken = (claims: Record<string, unknown>, options: { jwk?: Record<string, unknown>; typ?: string } = {}) =>
  signLogoutToken_(provider, claims, options);

const stores: Store[] = hasRedis ? ['cookie', 'memory', 'redis'] : ['cookie', 'memory'];

describe('POST /auth/logout', () => {
  it('revokes the refresh token at the provider', async () => {
    const { app } = await bff('cookie');
    const browser = new TestBrowser(app);
    await browser.login({ login: 'revoke-me' });
    const refreshToken = await refreshTokenOf(browser);
    expect(await isTokenActive(provider, refreshToken)).toBe(true);
    expect((await browser.request('/auth/logout', { method: 'POST' })).statusCode).toBe(200);
    expect(await isTokenActive(provider, refreshToken)).toBe(false);
  });

  it('answers the provider end-session URL with post_logout_redirect_uri and client_id, and no ID token', async () => {
    const { app } = await bff('cookie');
    const browser = new TestBrowser(app);
    await browser.login();
    const { logoutUrl } = (await browser.request('/auth/logout', { method: 'POST' })).json<{ logoutUrl: string }>();
    const url = new URL(logoutUrl);
    expect(`${url.origin}${url.pathname}`).toBe(provider.endpoints.endSession);
    expect(url.searchParams.get('client_id')).toBe(provider.clients.basic.clientId);
    expect(url.searchParams.get('post_logout_redirect_uri')).toBe('https://app.example.test/');
    expect(url.searchParams.has('id_token_hint')).toBe(false);
  });

  it('adds id_token_hint only when the operator opts in with oidc.logoutIdTokenHint', async () => {
    const instance = await startBff({
      oidc: { issuer: provider.issuer, clientId: provider.clients.basic.clientId, clientSecret: provider.clients.basic.clientSecret, logoutIdTokenHint: true },
      session: { secrets: [SECRET] },
    });
    started.push(instance);
    // Logged in through a browser the leak guard does not watch: this response carries the ID token by design.
    const browser = new TestBrowser(instance.app);
    await browser.login();
    const response = await instance.app.inject({ method: 'POST', url: '/auth/logout', headers: { cookie: browser.cookieHeader(), 'x-csrf': '1' } });
    expect(new URL(response.json<{ logoutUrl: string }>().logoutUrl).searchParams.get('id_token_hint')?.split('.')).toHaveLength(3);
  });

  it.each(stores)('store %s: a cookie captured before logout gets 401 login_required afterwards', async (store) => {
    const { app } = await bff(store);
    const browser = new TestBrowser(app);
    await browser.login();
    const captured = browser.cookieHeader();
    expect((await browser.request('/api/x', { headers: { cookie: captured } })).statusCode).toBe(200);
    await browser.request('/auth/logout', { method: 'POST' });
    const replay = await browser.request('/api/x', { headers: { cookie: captured } });
    expect(replay.statusCode).toBe(401);
    expect(replay.json().error).toBe('login_required');
  });

  it('accepts a plain HTML form post from our own origin and redirects with 303', async () => {
    const { app } = await bff('cookie');
    const browser = new TestBrowser(app);
    await browser.login();
    const captured = browser.cookieHeader();
    const response = await browser.request('/auth/logout', {
      method: 'POST',
      csrf: false,
      headers: { origin: 'https://app.example.test', 'content-type': 'application/x-www-form-urlencoded' },
      payload: '',
    });
    expect(response.statusCode).toBe(303);
    expect(new URL(String(response.headers.location)).origin).toBe(provider.issuer);
    expect((await browser.request('/api/x', { headers: { cookie: captured } })).statusCode).toBe(401);
  });

  it.each([
    ['from another origin', { origin: 'https://evil.example' }],
    ['without an Origin', {}],
  ])('refuses a logout form post %s with 403 and keeps the session', async (_name, headers) => {
    const { app } = await bff('cookie');
    const browser = new TestBrowser(app);
    await browser.login();
    const response = await browser.request('/auth/logout', {
      method: 'POST',
      csrf: false,
      headers: { ...headers, 'content-type': 'application/x-www-form-urlencoded' },
      payload: 'x=1',
    });
    expect(response.statusCode).toBe(403);
    expect((await browser.request('/api/x')).statusCode).toBe(200);
  });

  it('still ends the session locally when revocation fails, and logs why', async () => {
    const instance = await bff('cookie');
    const browser = new TestBrowser(instance.app);
    await browser.login();
    const captured = browser.cookieHeader();
    await provider.pause();
    try {
      const response = await browser.request('/auth/logout', { method: 'POST' });
      expect(response.statusCode).toBe(200);
    } finally {
      await provider.resume();
    }
    expect((await browser.request('/api/x', { headers: { cookie: captured } })).statusCode).toBe(401);
    expect(instance.logs.some((l) => String(l.msg).includes('revocation failed'))).toBe(true);
  });

  it('logs one info line with the reason and never a token', async () => {
    const instance = await bff('cookie');
    const browser = new TestBrowser(instance.app);
    await browser.login();
    await browser.request('/auth/logout', { method: 'POST' });
    const ended = instance.logs.filter((l) => l.msg === 'session ended');
    expect(ended).toHaveLength(1);
    expect(ended[0]).toMatchObject({ level: 30, reason: 'user' });
    for (const token of provider.issuedTokens()) expect(instance.logText()).not.toContain(token);
  });
});

describe('back-channel logout from the provider', () => {
  it.each(stores)('store %s: ending the provider session ends both sessions of the user', async (store) => {
    const instance = await bff(store, { listen: true });
    try {
      const providerJar = new CookieJar();
      const tabs = [new TestBrowser(instance.app), new TestBrowser(instance.app)];
      for (const tab of tabs) {
        const callback = await completeProviderLogin(await tab.startLogin('/'), { login: `bc-${store}`, jar: providerJar });
        expect((await tab.callback(callback)).statusCode).toBe(302);
        expect((await tab.request('/api/x')).statusCode).toBe(200);
      }
      const deliveredBefore = provider.backchannelLogouts.length;
      await completeProviderLogout(provider.endpoints.endSession, { jar: providerJar });
      await expect.poll(() => provider.backchannelLogouts.length, { timeout: 5000 }).toBeGreaterThan(deliveredBefore);
      expect(provider.backchannelLogouts.slice(deliveredBefore).every((d) => d.ok)).toBe(true);
      for (const tab of tabs) expect((await tab.request('/api/x')).statusCode).toBe(401);
    } finally {
      await stopListening(instance);
    }
  });

  it.runIf(hasRedis).each(['redis', 'cookie'] as const)(
    'store %s: a logout delivered to one replica ends the session on the other',
    async (store) => {
      const keyPrefix = uniquePrefix();
      const receiver = await bff(store, { keyPrefix, listen: true });
      const other = await bff(store, { keyPrefix });
      try {
        const providerJar = new CookieJar();
        const tab = new TestBrowser(other.app);
        await tab.callback(await completeProviderLogin(await tab.startLogin('/'), { login: `replica-${store}`, jar: providerJar }));
        expect((await tab.request('/api/x')).statusCode).toBe(200);
        const before = provider.backchannelLogouts.length;
        await completeProviderLogout(provider.endpoints.endSession, { jar: providerJar });
        await expect.poll(() => provider.backchannelLogouts.length, { timeout: 5000 }).toBeGreaterThan(before);
        expect((await tab.request('/api/x')).statusCode).toBe(401);
        expect((await new TestBrowser(receiver.app).request('/api/x', { headers: { cookie: tab.cookieHeader() } })).statusCode).toBe(401);
      } finally {
        await stopListening(receiver);
      }
    },
  );

  it.runIf(hasRedis).each(['back-channel logout', 'logout'] as const)(
    'store cookie with Redis: a %s is still in force after the replica restarts, and the old cookie is never refreshed',
    async (ending) => {
      const keyPrefix = uniquePrefix();
      const before = await bff('cookie', { keyPrefix });
      const browser = new TestBrowser(before.app);
      await browser.login({ login: `restart-${ending.replace(/ /g, '-')}` });
      const captured = browser.cookieHeader();
      const claims = (await browser.request('/auth/user', { csrf: false })).json<{ claims: { sub: string } }>().claims;
      if (ending === 'logout') expect((await browser.request('/auth/logout', { method: 'POST' })).statusCode).toBe(200);
      else expect((await postLogoutToken(before.app, await signLogoutToken({ sub: claims.sub }))).statusCode).toBe(200);
      await before.app.close();
      started.splice(started.indexOf(before), 1);

      const refreshesBefore = provider.tokenRequests.filter((r) => r.grantType === 'refresh_token').length;
      const after = await bff('cookie', { keyPrefix });
      // Traffic reaches a restarted replica once it is ready (its Redis connection is up).
      await expect.poll(async () => (await after.app.inject({ method: 'GET', url: '/readyz' })).statusCode, { timeout: 5000 }).toBe(200);
      const replay = new TestBrowser(after.app);
      expect((await replay.request('/api/x', { headers: { cookie: captured } })).statusCode).toBe(401);
      expect((await replay.request('/auth/refresh', { method: 'POST', headers: { cookie: captured } })).statusCode).toBe(401);
      expect(provider.tokenRequests.filter((r) => r.grantType === 'refresh_token')).toHaveLength(refreshesBefore);
    },
  );

  it('store cookie without Redis: warns at startup that logouts live in this process only', async () => {
    const instance = await bff('cookie');
    expect(instance.logs.some((line) => line.level === 40 && String(line.msg).includes('without session.redis'))).toBe(true);
  });

  it.each(stores)('store %s: a logout token naming only sub ends every session of that user', async (store) => {
    const { app } = await bff(store);
    const first = new TestBrowser(app);
    const second = new TestBrowser(app);
    await first.login({ login: `sub-only-${store}` });
    await second.login({ login: `sub-only-${store}` });
    const bystander = new TestBrowser(app);
    await bystander.login({ login: `bystander-${store}` });
    const response = await postLogoutToken(app, await signLogoutToken({ sub: `sub-only-${store}` }));
    expect(response.statusCode).toBe(200);
    expect(response.headers['cache-control']).toBe('no-store');
    expect((await first.request('/api/x')).statusCode).toBe(401);
    expect((await second.request('/api/x')).statusCode).toBe(401);
    expect((await bystander.request('/api/x')).statusCode).toBe(200);
  });
});

describe('invalid logout tokens', () => {
  const otherKey = (() => {
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    return { ...privateKey.export({ format: 'jwk' }), kid: 'attacker', alg: 'RS256' } as Record<string, unknown>;
  })();

  it.each<[string, () => Promise<string>]>([
    ['signed with another key', () => signLogoutToken({ sub: 'victim' }, { jwk: { ...otherKey, kid: String(provider.state.signingJwk.kid) } })],
    ['issued an hour ago', () => signLogoutToken({ sub: 'victim', iat: Math.floor(Date.now() / 1000) - 3600 })],
    ['without exp (the specification requires it)', () => signLogoutToken({ sub: 'victim', exp: undefined })],
    ['that has expired', () => signLogoutToken({ sub: 'victim', exp: Math.floor(Date.now() / 1000) - 120 })],
    ['for another audience', () => signLogoutToken({ sub: 'victim', aud: 'someone-else' })],
    ['carrying a nonce', () => signLogoutToken({ sub: 'victim', nonce: 'n' })],
    ['without the logout event', () => signLogoutToken({ sub: 'victim', events: {} })],
    ['naming neither sid nor sub', () => signLogoutToken({})],
    ['of another typ', () => signLogoutToken({ sub: 'victim' }, { typ: 'JWT+at' })],
    ['not a JWT at all', async () => 'garbage'],
  ])('refuses a logout token %s with 400 and ends no session', async (_name, makeToken) => {
    const { app } = await bff('cookie');
    const victim = new TestBrowser(app);
    await victim.login({ login: 'victim' });
    const response = await postLogoutToken(app, await makeToken());
    expect(response.statusCode).toBe(400);
    expect(response.json().error).toBe('bad_request');
    expect((await victim.request('/api/x')).statusCode).toBe(200);
  });

  it('refuses a replayed logout token (same jti)', async () => {
    const { app } = await bff('memory');
    const token = await signLogoutToken({ sub: 'nobody-in-particular' });
    expect((await postLogoutToken(app, token)).statusCode).toBe(200);
    expect((await postLogoutToken(app, token)).statusCode).toBe(400);
  });

  it('refuses a request without exactly one logout_token', async () => {
    const { app } = await bff('memory');
    const response = await app.inject({
      method: 'POST',
      url: '/auth/backchannel-logout',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      payload: 'logout_token=a&logout_token=b',
    });
    expect(response.statusCode).toBe(400);
  });
});
