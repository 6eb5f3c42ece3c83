/**
 * Provider faults (issue 9): what the browser sees when the OpenID provider is down, slow,
 * broken or misconfigured, and that the same browser's session comes back by itself (no new
 * login) once the provider is healthy again. Expected outcomes are docs/contracts.md's refresh-token
 * rules: network errors, timeouts and 5xx are transient (503 idp_unavailable with Retry-After,
 * session kept); a response that fails validation and invalid_client / unauthorized_client /
 * invalid_scope are faults to log loudly (503, error-level log, session kept); only
 * invalid_grant ends the session.
 *
 * The real oidc-provider produces every fault it can (down, restarted with a new signing key,
 * unauthorized_client). What it cannot produce is injected in front of it with
 * `provider.setLatency()` / `provider.setFault()` (test/support/provider.ts); each such test
 * says so. Synthesized token responses do not spend the real refresh token, so recovery is
 * the real refresh that follows.
 */
import { decodeProtectedHeader, decodeJwt } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LightMyRequestResponse } from 'fastify';
import { newSigningJwk, startProvider, type ProviderFault, type TestProvider } from './support/provider.js';
import { startUpstream, type EchoBody, type Upstream } from './support/upstream.js';
import { REDIRECT_URI, SECRET, startBff, TestBrowser, type TestBff } from './support/bff.js';

const SESSION = '__Host-th_session';

let provider: TestProvider;
let upstream: Upstream;
const started: TestBff[] = [];
const cleanups: Array<() => Promise<void>> = [];

beforeAll(async () => {
  provider = await startProvider({ redirectUris: [REDIRECT_URI], rotateRefreshToken: true });
  upstream = await upstreamFor(provider);
});

afterAll(async () => {
  for (const bff of started) await bff.app.close();
  for (const cleanup of cleanups.reverse()) await cleanup();
  await upstream.close();
  await provider.stop();
});

async function upstreamFor(p: TestProvider): Promise<Upstream> {
  return startUpstream({
    introspectionEndpoint: `${p.issuer}/token/introspection`,
    clientId: p.clients.api.clientId,
    clientSecret: p.clients.api.clientSecret,
  });
}

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

interface BffOptions {
  clock?: Clock;
  oidc?: Record<string, unknown>;
  issuer?: string;
  clients?: TestProvider['clients'];
  api?: Upstream;
  waitForProvider?: boolean;
}

async function bffFor(p: TestProvider | undefined, options: BffOptions = {}): Promise<TestBff> {
  const clients = options.clients ?? p!.clients;
  const instance = await startBff(
    {
      oidc: {
        issuer: options.issuer ?? p!.issuer,
        clientId: clients.basic.clientId,
        clientSecret: clients.basic.clientSecret,
        ...options.oidc,
      },
      session: { secrets: [SECRET] },
      routes: [{ prefix: '/api', upstream: (options.api ?? upstream).url }],
    },
    {
      ...(options.clock ? { now: () => options.clock!.now } : {}),
      ...(options.waitForProvider === false ? { waitForProvider: false } : {}),
    },
  );
  started.push(instance);
  return instance;
}

const refreshGrants = (p: TestProvider) => p.tokenRequests.filter((r) => r.grantType === 'refresh_token');
const successfulRefreshes = (p: TestProvider) => refreshGrants(p).filter((r) => r.status === 200).length;
/** Authorization requests at the provider: a new one would mean the user had to log in again. */
const logins = (p: TestProvider) => p.requests.filter((r) => r.path === '/auth').length;
const lastUpstreamRequest = (api: Upstream = upstream) => api.requests[api.requests.length - 1]!;

/** A browser with a fresh session whose access token the BFF clock then considers expired. */
async function sessionWithExpiredToken(p: TestProvider, options: BffOptions = {}) {
  const time = options.clock ?? clock();
  const bff = await bffFor(p, { ...options, clock: time });
  const browser = new TestBrowser(bff.app);
  await browser.login();
  expect((await browser.request('/api/before')).statusCode).toBe(200);
  time.advance(120); // 60 s access tokens, 30 s skew: the next call must refresh first
  return { bff, browser, time, loginsBefore: logins(p), refreshesBefore: successfulRefreshes(p) };
}

/** docs/contracts.md "Refresh outcomes": 503 idp_unavailable with Retry-After, JSON only, and the session cookie kept. */
function expectIdpUnavailable(response: LightMyRequestResponse, browser: TestBrowser): void {
  expect(response.statusCode).toBe(503);
  expect(response.headers['content-type']).toMatch(/^application\/json/);
  expect(Object.keys(response.json()).sort()).toEqual(['error', 'error_description']);
  expect(response.json().error).toBe('idp_unavailable');
  expect(Number(response.headers['retry-after'])).toBeGreaterThan(0);
  expect(browser.cookies.get(SESSION)).toBeDefined();
}

/** The same browser's next call works, with a real refresh and without a new login. */
async function expectRecovered(p: TestProvider, browser: TestBrowser, before: { loginsBefore: number; refreshesBefore: number }, api = upstream) {
  const response = await browser.request('/api/after');
  expect(response.statusCode).toBe(200);
  expect(response.json<EchoBody>().sub).toBe('alice');
  expect(lastUpstreamRequest(api).tokenActive).toBe(true);
  expect(successfulRefreshes(p)).toBe(before.refreshesBefore + 1);
  expect(logins(p)).toBe(before.loginsBefore);
}

const errorLogs = (bff: TestBff) => bff.logs.filter((l) => l.level === 50);

describe('provider down at startup', () => {
  it('is not ready and retries discovery while the provider is not there, then becomes ready and logs users in', async () => {
    // A provider that has never answered on this port: get its port and state, then stop it.
    const first = await startProvider({ redirectUris: [REDIRECT_URI] });
    const { port, state, issuer, clients } = first;
    await first.stop();

    const bff = await bffFor(undefined, { issuer, clients, waitForProvider: false });
    const notReady = await bff.app.inject('/readyz');
    expect(notReady.statusCode).toBe(503);
    expect(notReady.json().checks.provider).toBe('failing');
    const browser = new TestBrowser(bff.app);
    const login = await browser.request('/auth/login', { csrf: false });
    expect(login.statusCode).toBe(503);
    expect(login.json().error).toBe('idp_unavailable');
    expect(Number(login.headers['retry-after'])).toBeGreaterThan(0);
    // It keeps trying (backoff 0.5 s, 1 s, …) rather than giving up after one attempt.
    const discoveryFailures = () => bff.logs.filter((l) => l.msg === 'provider discovery failed').length;
    await expect.poll(discoveryFailures, { timeout: 5_000, interval: 50 }).toBeGreaterThanOrEqual(2);
    expect((await bff.app.inject('/readyz')).statusCode).toBe(503);
    expect((await bff.app.inject('/healthz')).statusCode).toBe(200);

    const later = await startProvider({ port, state, redirectUris: [REDIRECT_URI] });
    cleanups.push(() => later.stop());
    await expect.poll(async () => (await bff.app.inject('/readyz')).statusCode, { timeout: 12_000, interval: 100 }).toBe(200);
    expect((await bff.app.inject('/readyz')).json().checks.provider).toBe('ok');

    const callback = await browser.login();
    expect(callback.statusCode).toBe(302);
    expect(browser.cookies.get(SESSION)).toBeDefined();
    const user = await browser.request('/auth/user', { csrf: false });
    expect(user.statusCode).toBe(200);
    expect(user.json().claims.sub).toBe('alice');
  }, 20_000);

  it("keeps a user's session (503 idp_unavailable) on an instance started while the provider is down, and serves it once the provider is back", async () => {
    const time = clock();
    const { browser, loginsBefore, refreshesBefore } = await sessionWithExpiredToken(provider, { clock: time });
    await provider.pause();
    let replica: TestBff | undefined;
    try {
      // A second replica (same secrets: it can read the cookie) starts while the provider is down.
      replica = await bffFor(provider, { clock: time, waitForProvider: false });
      expect((await replica.app.inject('/readyz')).json().checks.provider).toBe('failing');
      const tab = new TestBrowser(replica.app);
      tab.cookies.set(SESSION, browser.cookies.get(SESSION)!);
      const response = await tab.request('/api/orders');
      expectIdpUnavailable(response, tab);
      expect(tab.cookies.get(SESSION)).toBe(browser.cookies.get(SESSION));
    } finally {
      await provider.resume();
    }
    await expect.poll(async () => (await replica!.app.inject('/readyz')).statusCode, { timeout: 12_000, interval: 100 }).toBe(200);
    const tab = new TestBrowser(replica!.app);
    tab.cookies.set(SESSION, browser.cookies.get(SESSION)!);
    await expectRecovered(provider, tab, { loginsBefore, refreshesBefore });
  }, 20_000);
});

describe('provider down or slow during a refresh', () => {
  it('answers 503 idp_unavailable with Retry-After and keeps the session while the provider refuses connections, then refreshes when it is back', async () => {
    const { bff, browser, loginsBefore, refreshesBefore } = await sessionWithExpiredToken(provider);
    const cookieBefore = browser.cookies.get(SESSION);
    const upstreamCalls = upstream.requests.length;
    await provider.pause();
    try {
      const response = await browser.request('/api/orders');
      expectIdpUnavailable(response, browser);
      expect(browser.cookies.get(SESSION)).toBe(cookieBefore);
      // Twice: a browser retrying during the outage keeps getting the same answer.
      expectIdpUnavailable(await browser.request('/api/orders'), browser);
      expect(upstream.requests.length).toBe(upstreamCalls);
      expect(bff.logs.some((l) => l.level === 40 && String(l.msg).includes('refresh failed'))).toBe(true);
    } finally {
      await provider.resume();
    }
    await expectRecovered(provider, browser, { loginsBefore, refreshesBefore });
  });

  it('answers 503 idp_unavailable when the token endpoint is slower than oidc.timeoutMs, and the next call uses the late refresh result', async () => {
    // Injected: the real provider cannot be made slow; latency is added in front of it.
    const { browser, loginsBefore, refreshesBefore } = await sessionWithExpiredToken(provider, { oidc: { timeoutMs: 300 } });
    provider.setLatency('/token', 1_000);
    const started = Date.now();
    try {
      const response = await browser.request('/api/orders');
      expectIdpUnavailable(response, browser);
      // Bounded by the timeout, not by the provider's latency.
      expect(Date.now() - started).toBeLessThan(1_000);
    } finally {
      provider.setLatency('/token', 0);
    }
    // The refresh went on after the browser's 503 and completed at the provider, spending the
    // refresh token there; its late result is what the next call uses: no second refresh, no reuse.
    const reusesBefore = provider.tokenRequests.filter((r) => r.error === 'invalid_grant').length;
    await expect.poll(() => successfulRefreshes(provider), { timeout: 5_000 }).toBe(refreshesBefore + 1);
    await expectRecovered(provider, browser, { loginsBefore, refreshesBefore });
    expect(provider.tokenRequests.filter((r) => r.error === 'invalid_grant').length).toBe(reusesBefore);
  });
});

describe('provider answers a refresh with an error or a broken response', () => {
  // All injected: the real oidc-provider does not answer 5xx pages, malformed JSON, or token
  // responses with a missing access token, a foreign token type or a bad ID token.
  const transient: Array<[string, ProviderFault]> = [
    ['a 503 HTML error page', { status: 503, body: '<html><body><h1>503 Service Unavailable</h1></body></html>' }],
    ['a 500 with an OAuth JSON error', { status: 500, body: { error: 'server_error', error_description: 'database down' } }],
    ['a 502 from a gateway in front of the provider', { status: 502, body: 'Bad Gateway' }],
    ['a connection reset instead of an answer', { reset: true }],
  ];

  it.each(transient)('answers 503 idp_unavailable and keeps the session when the token endpoint returns %s, then recovers', async (_name, fault) => {
    const { bff, browser, loginsBefore, refreshesBefore } = await sessionWithExpiredToken(provider);
    const faulted = provider.faultedRequests.length;
    provider.setFault('/token', fault);
    try {
      const response = await browser.request('/api/orders');
      expectIdpUnavailable(response, browser);
      expect(provider.faultedRequests.length).toBeGreaterThan(faulted);
      expect(bff.logs.some((l) => l.level === 40 && String(l.msg).includes('refresh failed'))).toBe(true);
    } finally {
      provider.setFault('/token', null);
    }
    await expectRecovered(provider, browser, { loginsBefore, refreshesBefore });
  });

  const rejected: Array<[string, ProviderFault]> = [
    ['malformed JSON', { status: 200, body: '{"access_token":', headers: { 'content-type': 'application/json' } }],
    ['a token response without access_token', { tokenResponse: { omit: ['access_token'] } }],
    ['a token response with token_type "mac"', { tokenResponse: { set: { token_type: 'mac' } } }],
    ['an ID token from another issuer (wrong iss)', { tokenResponse: { idToken: { claims: { iss: 'https://evil.example' } } } }],
    ['an ID token for another client (wrong aud)', { tokenResponse: { idToken: { claims: { aud: 'some-other-client' } } } }],
    ['an ID token whose signature does not verify (signed with a foreign key)', { tokenResponse: { idToken: { key: 'foreign' } } }],
    ['an ID token that has expired', { tokenResponse: { idToken: { claims: { exp: Math.floor(Date.now() / 1000) - 3600, iat: Math.floor(Date.now() / 1000) - 7200 } } } }],
  ];

  it.each(rejected)('answers 503 idp_unavailable, logs an error and keeps the session when a refresh returns %s, then recovers', async (_name, fault) => {
    const { bff, browser, loginsBefore, refreshesBefore } = await sessionWithExpiredToken(provider);
    const cookieBefore = browser.cookies.get(SESSION);
    const faulted = provider.faultedRequests.length;
    const upstreamCalls = upstream.requests.length;
    provider.setFault('/token', fault);
    try {
      const response = await browser.request('/api/orders');
      expectIdpUnavailable(response, browser);
      expect(browser.cookies.get(SESSION)).toBe(cookieBefore);
      expect(provider.faultedRequests.length).toBeGreaterThan(faulted);
      // The rejected tokens never reached the API.
      expect(upstream.requests.length).toBe(upstreamCalls);
      expect(errorLogs(bff).some((l) => /refresh failed/.test(String(l.msg)))).toBe(true);
    } finally {
      provider.setFault('/token', null);
    }
    await expectRecovered(provider, browser, { loginsBefore, refreshesBefore });
  });

  it('also rejects a bad ID token on a forced refresh (POST /auth/refresh) and keeps the previous claims', async () => {
    // Injected: a synthesized token response whose ID token is signed with a foreign key.
    const { bff, browser, loginsBefore, refreshesBefore } = await sessionWithExpiredToken(provider);
    const before = (await browser.request('/auth/user', { csrf: false })).json();
    provider.setFault('/token', { tokenResponse: { idToken: { key: 'foreign', claims: { name: 'Mallory' } } } });
    try {
      const response = await browser.request('/auth/refresh', { method: 'POST' });
      expectIdpUnavailable(response, browser);
      expect(errorLogs(bff).some((l) => /refresh failed/.test(String(l.msg)))).toBe(true);
      const user = await browser.request('/auth/user', { csrf: false });
      expect(user.json().claims).toEqual(before.claims);
    } finally {
      provider.setFault('/token', null);
    }
    await expectRecovered(provider, browser, { loginsBefore, refreshesBefore });
  });
});

describe('client configuration faults at the provider', () => {
  it('ends the session (401 login_required, cookie cleared) when the provider no longer allows this client the refresh grant and says so with 400 invalid_request', async () => {
    // Real provider: the client is re-registered without the refresh_token grant. oidc-provider 9
    // answers 400 invalid_request ("requested grant type is not allowed for this client").
    // docs/contracts.md "Refresh outcomes": a 400 with any error but invalid_client / unauthorized_client means the
    // grant cannot be used (real providers answer dead refresh tokens with invalid_request too),
    // so the session ends rather than leaving the user on 503 until the absolute timeout.
    const { browser } = await sessionWithExpiredToken(provider);
    const refreshesAttempted = refreshGrants(provider).length;
    await provider.addClient({
      client_id: provider.clients.basic.clientId,
      client_secret: provider.clients.basic.clientSecret,
      token_endpoint_auth_method: 'client_secret_basic',
      grant_types: ['authorization_code'],
      response_types: ['code'],
      redirect_uris: [REDIRECT_URI],
    });
    try {
      const response = await browser.request('/api/orders');
      expect(response.statusCode).toBe(401);
      expect(response.json().error).toBe('login_required');
      expect(browser.cookies.get(SESSION)).toBeUndefined();
      const refused = refreshGrants(provider).at(-1);
      expect(refused?.status).toBe(400);
      expect(refused?.errorDescription).toMatch(/grant type is not allowed/);
      expect(refreshGrants(provider).length).toBe(refreshesAttempted + 1);
    } finally {
      await provider.updateBffClients({});
    }
  });

  // Injected: oidc-provider 9 answers a disallowed grant type with invalid_request, not
  // unauthorized_client (what older providers send).
  it.each(['unauthorized_client'])('answers 503 and logs a configuration fault when a refresh is answered 400 %s, and recovers', async (error) => {
    const { bff, browser, loginsBefore, refreshesBefore } = await sessionWithExpiredToken(provider);
    provider.setFault('/token', { status: 400, body: { error, error_description: `injected ${error}` } });
    try {
      const response = await browser.request('/api/orders');
      expectIdpUnavailable(response, browser);
      const fault = errorLogs(bff).find((l) => String(l.msg).includes('configuration fault'));
      expect(fault?.oauthError).toBe(error);
    } finally {
      provider.setFault('/token', null);
    }
    await expectRecovered(provider, browser, { loginsBefore, refreshesBefore });
  });
});

describe('signing key rotation at the provider', () => {
  /**
   * The provider restarts on the same issuer with the same grants and starts signing with a
   * new key. token-handler must verify the refreshed ID token against the provider's current
   * JWKS (fetching it again for the unknown kid) and accept it. (That the signature is checked
   * at all is the "signature does not verify" cases above.)
   */
  async function rotate(keepOldKeyPublished: boolean) {
    const before = await startProvider({ redirectUris: [REDIRECT_URI] });
    let current = before;
    cleanups.push(() => current.stop());
    const api = await upstreamFor(before);
    cleanups.push(() => api.close());
    const time = clock();
    const bff = await bffFor(before, { clock: time, api });
    const browser = new TestBrowser(bff.app);
    await browser.login();
    expect((await browser.request('/api/before')).statusCode).toBe(200);
    const claimsBefore = (await browser.request('/auth/user', { csrf: false })).json().claims;

    const oldKey = before.state.signingJwk;
    const newKey = newSigningJwk();
    await before.stop();
    const after = await startProvider({
      port: before.port,
      redirectUris: [REDIRECT_URI],
      state: { ...before.state, signingJwk: newKey, ...(keepOldKeyPublished ? { retiredSigningJwks: [oldKey] } : {}) },
    });
    current = after;
    const published = (await (await fetch(after.endpoints.jwks)).json()) as { keys: Array<{ kid: string }> };
    expect(published.keys.map((k) => k.kid)).toEqual(keepOldKeyPublished ? [newKey.kid, oldKey.kid] : [newKey.kid]);

    time.advance(120);
    const response = await browser.request('/api/after');
    expect(response.statusCode).toBe(200);
    expect(response.json<EchoBody>().sub).toBe('alice');
    // The refresh really happened at the restarted provider, with an ID token signed by the new key.
    const idToken = after.issuedTokens().filter((t) => decodeJwtOrNull(t)?.aud === before.clients.basic.clientId).at(-1);
    expect(idToken).toBeDefined();
    expect(decodeProtectedHeader(idToken!).kid).toBe(newKey.kid);
    const user = (await browser.request('/auth/user', { csrf: false })).json();
    expect(user.claims.sub).toBe('alice');
    expect(user.claims.iat).toBeGreaterThanOrEqual(claimsBefore.iat);
    expect(errorLogs(bff)).toEqual([]);
    // And the session goes on: the refresh token the restarted provider issued is the one kept.
    time.advance(120);
    const refreshes = successfulRefreshes(after);
    expect((await browser.request('/api/later')).statusCode).toBe(200);
    expect(successfulRefreshes(after)).toBe(refreshes + 1);
    expect(refreshGrants(after).every((r) => r.status === 200)).toBe(true);
  }

  it('accepts the refreshed ID token when the provider restarts signing with a new key and publishes only that key', async () => {
    await rotate(false);
  });

  it('accepts the refreshed ID token when the provider signs with a new key and still publishes the old one', async () => {
    await rotate(true);
  });
});

function decodeJwtOrNull(token: string): Record<string, unknown> | null {
  if (token.split('.').length !== 3) return null;
  try {
    return decodeJwt(token);
  } catch {
    return null;
  }
}
