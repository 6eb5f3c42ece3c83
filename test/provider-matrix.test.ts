/**
 * Provider-behaviour matrix (issue 18): the flows a user goes through — login, proxying,
 * proactive and reactive refresh, a dead refresh token, logout — against the real oidc-provider
 * configured per profile as far as it can be (rotation on/off, opaque or JWT access tokens, PAR
 * on/required/off, an issuer with a path, no revocation / end-session / userinfo,
 * client_secret_post). What oidc-provider cannot be configured to do (empty or HTML 400 bodies,
 * invalid_request for a dead refresh token, lower-case token types, string expires_in, missing
 * members, an HTML revocation answer, an authorization response without `iss`) is produced by the
 * REWRITING LAYER of test/support/provider.ts (`setRewrite`): the real provider answers, and the
 * layer changes that answer before token-handler sees it. Each profile says which it uses.
 *
 * Time: access tokens live 60 s at the provider; token-handler's clock (`now`) is moved instead
 * of sleeping, so a refresh is due without waiting.
 */
import { afterAll, describe, expect, it } from 'vitest';
import type { LightMyRequestResponse } from 'fastify';
import { rewriteJson, startProvider, RESOURCE_SERVER, type TestProvider, type TestProviderOptions } from './support/provider.js';
import { startUpstream, type EchoBody, type Upstream } from './support/upstream.js';
import { REDIRECT_URI, SECRET, startBff, TestBrowser, type TestBff } from './support/bff.js';
import { completeProviderLogin, completeProviderLogout, CookieJar } from './support/browser.js';

const SESSION = '__Host-th_session';
const POST_LOGOUT = 'https://app.example.test/';

interface Profile {
  name: string;
  provider: Omit<TestProviderOptions, 'redirectUris'>;
  /** Which registered client token-handler uses. Default basic. */
  client?: 'basic' | 'post';
  oidc?: Record<string, unknown>;
  /** Rewriting layer (test/support/provider.ts) installed for the whole profile, if any. */
  rewrite?: (p: TestProvider) => void;
  /** The authorization response as the browser delivers it (e.g. without `iss`). */
  callbackUrl?: (url: string) => string;
  /** How the API is made to refuse the current access token: revoked at the provider, or a JWT it still accepts (so a 401 route is used). */
  reactive: 'revoke' | 'api-401';
  /** What token-handler saw when the dead refresh token was refused (after any rewriting). */
  refusal?: { oauthError?: string; contentType?: RegExp };
  /** What the provider's discovery lacks. */
  noRevocation?: boolean;
  noEndSession?: boolean;
}

const withoutIss = (url: string) => {
  const u = new URL(url);
  u.searchParams.delete('iss');
  u.searchParams.set('session_state', 'c2Vzc2lvbi1zdGF0ZQ.salt');
  return u.href;
};

/** Rewriting layer: a refused refresh (the real provider's 400 invalid_grant) becomes `body` with `contentType`. */
const refusedAs = (body: string, contentType: string | undefined) => (answer: { status: number; headers: Record<string, string>; body: string }) => {
  if (answer.status !== 400) return answer;
  const headers = { ...answer.headers };
  if (contentType) headers['content-type'] = contentType;
  else delete headers['content-type'];
  return { ...answer, headers, body };
};

const tokenPath = (p: TestProvider) => new URL(p.endpoints.token).pathname;

const profiles: Profile[] = [
  {
    name: 'oidc-provider defaults: rotating refresh tokens, opaque access tokens, PAR advertised, client_secret_basic',
    provider: { pushedAuthorizationRequests: 'on' },
    reactive: 'revoke',
  },
  {
    name: 'refresh tokens not rotated, JWT access tokens, no PAR',
    provider: { rotateRefreshToken: false, accessTokenFormat: 'jwt', pushedAuthorizationRequests: 'off' },
    reactive: 'api-401',
  },
  {
    name: 'issuer with a path (/realms/x), PAR required, client_secret_post',
    provider: { mountPath: '/realms/x', pushedAuthorizationRequests: 'required' },
    client: 'post',
    oidc: { clientAuth: 'client_secret_post' },
    reactive: 'revoke',
  },
  {
    name: 'discovery without revocation_endpoint, end_session_endpoint and userinfo_endpoint',
    provider: { revocation: false, endSession: false, userinfo: false },
    reactive: 'revoke',
    noRevocation: true,
    noEndSession: true,
  },
  {
    // Rewriting layer: oidc-provider always sends a JSON error body, token_type "Bearer" and a
    // numeric expires_in; this profile is a provider that answers otherwise.
    name: 'dead refresh token answered 400 with an empty body; token_type "bearer"; expires_in a string; no refresh_token in refresh responses (rewriting layer)',
    provider: { rotateRefreshToken: false },
    rewrite: (p) =>
      p.setRewrite(tokenPath(p), (answer) => {
        if (answer.status === 400) return refusedAs('', undefined)(answer);
        return rewriteJson((json) => {
          const out: Record<string, unknown> = { ...json, token_type: 'bearer', expires_in: String(json.expires_in) };
          // Only refresh answers lack the refresh token; the login answer keeps it.
          if (refreshing.has(p)) delete out.refresh_token;
          return out;
        })(answer);
      }),
    refusal: {},
    reactive: 'revoke',
  },
  {
    // Rewriting layer: an HTML error page for the dead token, a lower-case token type, and a
    // granted scope without offline_access although a refresh token is issued; no ID token on refresh.
    name: 'dead refresh token answered 400 with an HTML page; offline_access missing from the granted scope; no id_token on refresh (rewriting layer)',
    provider: {},
    rewrite: (p) =>
      p.setRewrite(tokenPath(p), (answer) => {
        if (answer.status === 400) return refusedAs('<html><body><h1>Bad Request</h1></body></html>', 'text/html; charset=utf-8')(answer);
        return rewriteJson((json) => {
          const out: Record<string, unknown> = { ...json, scope: String(json.scope ?? '').split(' ').filter((s) => s !== 'offline_access').join(' ') };
          if (refreshing.has(p)) delete out.id_token;
          return out;
        })(answer);
      }),
    refusal: { contentType: /^text\/html/ },
    reactive: 'revoke',
  },
  {
    // Rewriting layer: invalid_request for a dead token (what some providers send instead of
    // invalid_grant), revocation answered 200 with an HTML page, and no RFC 9207 `iss` (neither
    // advertised nor sent) but a `session_state` in the authorization response.
    name: 'dead refresh token answered 400 invalid_request; revocation answers 200 HTML; authorization response without iss, with session_state (rewriting layer)',
    provider: {},
    rewrite: (p) => {
      p.setRewrite(tokenPath(p), (answer) => (answer.status === 400 ? { ...answer, body: JSON.stringify({ error: 'invalid_request', error_description: 'token not found' }) } : answer));
      p.setRewrite(new URL(p.endpoints.revocation).pathname, (answer) => ({ status: 200, headers: { 'content-type': 'text/html' }, body: '<html><body>OK</body></html>' }));
      p.setRewrite(new URL(p.endpoints.discovery).pathname, rewriteJson(({ authorization_response_iss_parameter_supported: _iss, ...json }) => json));
    },
    callbackUrl: withoutIss,
    refusal: { oauthError: 'invalid_request', contentType: /^application\/json/ },
    reactive: 'revoke',
  },
];

/** Providers whose next token answers are refresh answers (set around refreshing calls, read by rewrites). */
const refreshing = new Set<TestProvider>();

const cleanups: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

interface Clock {
  now: number;
  advance(seconds: number): void;
}

describe.each(profiles)('$name', (profile) => {
  let provider: TestProvider;
  let upstream: Upstream;
  let bff: TestBff;
  let time: Clock;
  let users = 0;

  const setup = async () => {
    if (bff) return;
    provider = await startProvider({ redirectUris: [REDIRECT_URI], postLogoutRedirectUris: [POST_LOGOUT], ...profile.provider });
    cleanups.push(() => provider.stop());
    profile.rewrite?.(provider);
    upstream = await startUpstream({
      introspectionEndpoint: provider.endpoints.introspection,
      clientId: provider.clients.api.clientId,
      clientSecret: provider.clients.api.clientSecret,
      ...(profile.provider.accessTokenFormat === 'jwt' ? { jwt: { jwksUri: provider.endpoints.jwks, issuer: provider.issuer, audience: RESOURCE_SERVER } } : {}),
    });
    cleanups.push(() => upstream.close());
    time = { now: Date.now(), advance(seconds) { this.now += seconds * 1000; } };
    const client = provider.clients[profile.client ?? 'basic'];
    bff = await startBff(
      {
        oidc: { issuer: provider.issuer, clientId: client.clientId, clientSecret: client.clientSecret, postLogoutRedirectUri: POST_LOGOUT, ...profile.oidc },
        session: { secrets: [SECRET] },
        routes: [{ prefix: '/api', upstream: upstream.url }],
      },
      { now: () => time.now },
    );
    cleanups.push(() => bff.app.close());
  };

  /** A browser signed in as a user of its own (so revoking one user's grants touches no other test). */
  const signedIn = async () => {
    await setup();
    const browser = new TestBrowser(bff.app);
    const login = `user${++users}`;
    const authorizationUrl = await browser.startLogin();
    const jar = new CookieJar();
    const redirect = await completeProviderLogin(authorizationUrl, { login, jar });
    const callback = await browser.callback(profile.callbackUrl ? profile.callbackUrl(redirect) : redirect);
    expect(callback.statusCode, callback.body).toBe(302);
    return { browser, login, authorizationUrl, jar };
  };

  const refreshCalls = () => provider.tokenRequests.filter((r) => r.grantType === 'refresh_token');
  const request = async (browser: TestBrowser, url: string, options: Parameters<TestBrowser['request']>[1] = {}): Promise<LightMyRequestResponse> => {
    refreshing.add(provider);
    try {
      return await browser.request(url, options);
    } finally {
      refreshing.delete(provider);
    }
  };

  it('signs the user in and proxies an API call with an access token the API accepts', async () => {
    const { browser, login, authorizationUrl } = await signedIn();
    const usesPar = (profile.provider.pushedAuthorizationRequests ?? 'off') !== 'off';
    // PAR: the browser's authorization URL carries only client_id and request_uri.
    expect(new URL(authorizationUrl).searchParams.has('request_uri')).toBe(usesPar);
    expect(new URL(authorizationUrl).searchParams.has('code_challenge')).toBe(!usesPar);
    const response = await request(browser, '/api/orders');
    expect(response.statusCode).toBe(200);
    expect(response.json<EchoBody>().sub).toBe(login);
    expect(upstream.requests.at(-1)!.tokenActive).toBe(true);
    expect(browser.cookies.get(SESSION)).toBeDefined();
  });

  it('refreshes proactively when the access token is about to expire, once, and the API gets the new token', async () => {
    const { browser, login } = await signedIn();
    expect((await request(browser, '/api/before')).statusCode).toBe(200);
    const before = refreshCalls().length;
    time.advance(45); // 60 s tokens, 30 s skew: due
    const response = await request(browser, '/api/after');
    expect(response.statusCode).toBe(200);
    expect(response.json<EchoBody>().sub).toBe(login);
    expect(refreshCalls().slice(before).map((r) => r.status)).toEqual([200]);
    // Still signed in with the claims of the login (kept when the refresh brings no ID token).
    const user = await request(browser, '/auth/user', { csrf: false });
    expect(user.json().claims.sub).toBe(login);
    // And a second refresh works with whatever refresh token the first one left.
    time.advance(45);
    expect((await request(browser, '/api/later')).statusCode).toBe(200);
    expect(refreshCalls().slice(before).map((r) => r.status)).toEqual([200, 200]);
    expect(bff.logs.filter((l) => l.msg === 'refresh' && l.outcome === 'success').length).toBeGreaterThanOrEqual(2);
  });

  it('refreshes reactively when the API refuses the access token, and replays the call once', async () => {
    const { browser, login } = await signedIn();
    expect((await request(browser, '/api/before')).statusCode).toBe(200);
    const before = refreshCalls().length;
    if (profile.reactive === 'revoke') {
      await provider.revokeAccessTokensOf(login);
      const response = await request(browser, '/api/after');
      expect(response.statusCode).toBe(200);
      expect(response.json<EchoBody>().sub).toBe(login);
    } else {
      // A JWT access token stays valid at an API that checks it locally: this route answers 401 anyway.
      const calls = upstream.requests.length;
      const response = await request(browser, '/api/status/401');
      expect(response.statusCode).toBe(401);
      expect(upstream.requests.length).toBe(calls + 2);
      expect(upstream.requests.at(-1)!.tokenActive).toBe(true);
    }
    expect(refreshCalls().slice(before).map((r) => r.status)).toEqual([200]);
  });

  it('ends the session on a dead refresh token: 401 login_required, cookie cleared, exactly one provider call', async () => {
    const { browser, login } = await signedIn();
    expect((await request(browser, '/api/before')).statusCode).toBe(200);
    await provider.revokeGrantsOf(login);
    time.advance(45);
    const before = refreshCalls().length;
    const response = await request(browser, '/api/after');
    expect(response.statusCode).toBe(401);
    expect(response.json().error).toBe('login_required');
    expect(browser.cookies.get(SESSION)).toBeUndefined();
    expect(refreshCalls().length).toBe(before + 1);
    expect(refreshCalls().at(-1)!.status).toBe(400);
    // The browser comes back: still 401, and the dead token is not tried again.
    const again = await request(browser, '/api/after');
    expect(again.statusCode).toBe(401);
    expect(refreshCalls().length).toBe(before + 1);
    expect(bff.logs.some((l) => l.msg === 'refresh' && l.outcome === 'invalid_grant')).toBe(true);
    // What token-handler saw: the real provider's invalid_grant, or what the rewriting layer made of it.
    const refused = bff.logs.filter((l) => String(l.msg).startsWith('refresh refused')).at(-1) as { oauthError?: string; provider: { status: number; contentType?: string; bodyBytes?: number } };
    expect(refused.provider.status).toBe(400);
    expect(refused.oauthError).toBe(profile.refusal ? profile.refusal.oauthError : 'invalid_grant');
    if (profile.refusal?.contentType) expect(refused.provider.contentType).toMatch(profile.refusal.contentType);
    if (profile.refusal && !profile.refusal.contentType) expect(refused.provider).toEqual({ status: 400, bodyBytes: 0 });
  });

  it(`logs out: ${profile.noRevocation ? 'no revocation endpoint to call' : 'the refresh token is revoked'}, the session ends, ${profile.noEndSession ? 'and no provider logout URL is given' : 'and the provider asks the user to confirm'}`, async () => {
    const { browser, login, jar } = await signedIn();
    const logsBefore = bff.logs.length;
    const revocations = () => provider.requests.filter((r) => r.method === 'POST' && r.path.endsWith('/token/revocation')).length;
    const revokedBefore = revocations();
    const response = await request(browser, '/auth/logout', { method: 'POST' });
    expect(response.statusCode).toBe(200);
    const { logoutUrl } = response.json<{ logoutUrl: string | null }>();
    expect(browser.cookies.get(SESSION)).toBeUndefined();
    expect((await request(browser, '/api/after')).statusCode).toBe(401);
    expect(revocations()).toBe(revokedBefore + (profile.noRevocation ? 0 : 1));
    if (!profile.noRevocation) {
      // Revoked at the provider: the grant's refresh tokens are gone.
      expect(provider.state.store.list('RefreshToken').some(({ payload }) => payload.accountId === login)).toBe(false);
    }
    if (profile.noEndSession) {
      expect(logoutUrl).toBeNull();
    } else {
      expect(logoutUrl).toContain(`${provider.issuer}/session/end`);
      // The provider shows its confirmation page, then sends the browser back to us.
      expect(await completeProviderLogout(logoutUrl!, { jar })).toMatch(/^https:\/\/app\.example\.test\//);
    }
    expect(bff.logs.slice(logsBefore).filter((l) => Number(l.level) >= 40)).toEqual([]);
  });
});

/**
 * Single behaviours of real providers, each on its own: one provider (oidc-provider defaults, PAR
 * off) and a token-handler per test where its configuration differs.
 */
describe('what real providers answer, one behaviour at a time', () => {
  let provider: TestProvider;
  let upstream: Upstream;
  let setupDone: Promise<void> | undefined;

  const setup = () =>
    (setupDone ??= (async () => {
      provider = await startProvider({ redirectUris: [REDIRECT_URI], postLogoutRedirectUris: [POST_LOGOUT] });
      cleanups.push(() => provider.stop());
      upstream = await startUpstream({
        introspectionEndpoint: provider.endpoints.introspection,
        clientId: provider.clients.api.clientId,
        clientSecret: provider.clients.api.clientSecret,
      });
      cleanups.push(() => upstream.close());
    })());

  const bffWith = async (oidc: Record<string, unknown> = {}, options: { waitForProvider?: boolean; routes?: unknown[] } = {}) => {
    await setup();
    const time = { now: Date.now(), advance(seconds: number) { this.now += seconds * 1000; } };
    const bff = await startBff(
      {
        oidc: { issuer: provider.issuer, clientId: provider.clients.basic.clientId, clientSecret: provider.clients.basic.clientSecret, ...oidc },
        session: { secrets: [SECRET] },
        routes: options.routes ?? [{ prefix: '/api', upstream: upstream.url }],
      },
      { now: () => time.now, ...(options.waitForProvider === false ? { waitForProvider: false } : {}) },
    );
    cleanups.push(() => bff.app.close());
    return { bff, time };
  };

  /** A signed-in browser whose access token token-handler's clock considers due. */
  const dueSession = async (oidc: Record<string, unknown> = {}) => {
    const { bff, time } = await bffWith(oidc);
    const browser = new TestBrowser(bff.app);
    expect((await browser.login()).statusCode).toBe(302);
    time.advance(45);
    return { bff, browser };
  };

  const logged = (bff: TestBff, msg: RegExp) => bff.logs.filter((l) => msg.test(String(l.msg)));

  it('passes on the provider\'s own Retry-After when a refresh is answered 429, and keeps the session', async () => {
    // Injected in front of the provider: oidc-provider does not rate-limit.
    const { bff, browser } = await dueSession();
    provider.setFault('/token', { status: 429, body: { error: 'slow_down' }, headers: { 'retry-after': '17' } });
    try {
      const response = await browser.request('/api/orders');
      expect(response.statusCode).toBe(503);
      expect(response.json().error).toBe('idp_unavailable');
      expect(response.headers['retry-after']).toBe('17');
      expect(browser.cookies.get(SESSION)).toBeDefined();
      expect(logged(bff, /refresh failed: provider unavailable/)[0]).toMatchObject({ retryAfterSeconds: 17, provider: { status: 429 } });
    } finally {
      provider.setFault('/token', null);
    }
    expect((await browser.request('/api/orders')).statusCode).toBe(200);
  });

  it('keeps the session (503) and logs a configuration fault naming the keys when a refresh is answered 401 without a body', async () => {
    // Injected: oidc-provider answers a refused client with a JSON body.
    const { bff, browser } = await dueSession();
    provider.setFault('/token', { status: 401, body: '' });
    try {
      const response = await browser.request('/api/orders');
      expect(response.statusCode).toBe(503);
      expect(browser.cookies.get(SESSION)).toBeDefined();
      const fault = logged(bff, /configuration fault/)[0];
      expect(fault).toMatchObject({ level: 50, provider: { status: 401, bodyBytes: 0 }, check: ['oidc.clientId', 'oidc.clientSecret', 'oidc.clientAuth'] });
    } finally {
      provider.setFault('/token', null);
    }
    expect((await browser.request('/api/orders')).statusCode).toBe(200);
  });

  it('keeps the session (503) when the provider no longer accepts our client secret, and logs invalid_client with the keys to check', async () => {
    // Real provider: the client is registered again with another secret.
    const { bff, browser } = await dueSession();
    const { clientId, clientSecret } = provider.clients.basic;
    await provider.addClient({ client_id: clientId, client_secret: `${clientSecret}-rotated`, token_endpoint_auth_method: 'client_secret_basic', grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'], redirect_uris: [REDIRECT_URI] });
    try {
      const response = await browser.request('/api/orders');
      expect(response.statusCode).toBe(503);
      expect(browser.cookies.get(SESSION)).toBeDefined();
      const fault = logged(bff, /configuration fault/)[0];
      expect(fault).toMatchObject({ level: 50, oauthError: 'invalid_client', check: ['oidc.clientId', 'oidc.clientSecret', 'oidc.clientAuth'] });
    } finally {
      await provider.updateBffClients({});
    }
    expect((await browser.request('/api/orders')).statusCode).toBe(200);
  });

  it('logs in with a client secret containing + / : % and - under the default RFC 6749 encoding', async () => {
    await setup();
    const clientSecret = 'sec+ret/with:colon%and-dash_0123456789';
    await provider.addClient({ client_id: 'bff-special', client_secret: clientSecret, token_endpoint_auth_method: 'client_secret_basic', grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'], redirect_uris: [REDIRECT_URI] });
    const { bff } = await bffWith({ clientId: 'bff-special', clientSecret });
    const browser = new TestBrowser(bff.app);
    expect((await browser.login()).statusCode).toBe(302);
    expect((await browser.request('/api/orders')).statusCode).toBe(200);
  });

  it('with oidc.clientSecretBasicEncoding: plain, a provider that form-decodes refuses such a secret, and the error log names the switch', async () => {
    // Real provider: oidc-provider form-decodes Basic credentials (RFC 6749), so the plain "+" arrives
    // as a space and the secret does not match (a "%" would make it answer 400 invalid_request instead).
    await setup();
    const clientSecret = 'sec+ret/with:colon-and-dash_0123456789';
    await provider.addClient({ client_id: 'bff-special-plain', client_secret: clientSecret, token_endpoint_auth_method: 'client_secret_basic', grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'], redirect_uris: [REDIRECT_URI] });
    const { bff } = await bffWith({ clientId: 'bff-special-plain', clientSecret, clientSecretBasicEncoding: 'plain' });
    const browser = new TestBrowser(bff.app);
    const callback = await browser.login();
    expect(callback.statusCode).toBe(400);
    expect(callback.json().error_description).toMatch(/refused this application \(invalid_client\)/);
    const refusal = logged(bff, /sign-in failed: the provider refused this client/)[0];
    expect(refusal).toMatchObject({ level: 50, oauthError: 'invalid_client', check: ['oidc.clientId', 'oidc.clientSecret', 'oidc.clientAuth'] });
    expect(String(refusal?.hint)).toMatch(/clientSecretBasicEncoding is plain.*try rfc6749/);
    expect(bff.logText()).not.toContain(clientSecret);
  });

  it('with a wrong client secret, sign-in fails with a clear 400 and an error log naming the keys and the encoding switch', async () => {
    // Real provider: the code exchange is refused with invalid_client.
    const { bff } = await bffWith({ clientSecret: 'wrong-secret-wrong-secret' });
    const browser = new TestBrowser(bff.app);
    const callback = await browser.login();
    expect(callback.statusCode).toBe(400);
    expect(callback.json().error).toBe('bad_request');
    const refusal = logged(bff, /sign-in failed: the provider refused this client/)[0];
    expect(refusal).toMatchObject({ level: 50, oauthError: 'invalid_client', check: ['oidc.clientId', 'oidc.clientSecret', 'oidc.clientAuth'] });
    expect(String(refusal?.hint)).toMatch(/oidc\.clientSecretBasicEncoding: plain/);
  });

  it('with oidc.pushedAuthorizationRequests: always and a provider without PAR, login answers 503 and the log names the key', async () => {
    const { bff } = await bffWith({ pushedAuthorizationRequests: 'always' });
    expect(logged(bff, /pushedAuthorizationRequests is always/)[0]).toMatchObject({ level: 50 });
    const response = await new TestBrowser(bff.app).request('/auth/login', { csrf: false });
    expect(response.statusCode).toBe(503);
    expect(response.json().error).toBe('idp_unavailable');
  });

  it('with oidc.pushedAuthorizationRequests: never and a provider that requires PAR, the log says logins will fail and which key to set', async () => {
    const p = await startProvider({ redirectUris: [REDIRECT_URI], pushedAuthorizationRequests: 'required' });
    cleanups.push(() => p.stop());
    const bff = await startBff({ oidc: { issuer: p.issuer, clientId: p.clients.basic.clientId, clientSecret: p.clients.basic.clientSecret, pushedAuthorizationRequests: 'never' }, session: { secrets: [SECRET] } });
    cleanups.push(() => bff.app.close());
    expect(logged(bff, /requires pushed authorization requests/)[0]).toMatchObject({ level: 50, check: ['oidc.pushedAuthorizationRequests'] });
  });

  it('ends the session with 401 login_required, without calling the provider, when the access token expires and the provider issued no refresh token', async () => {
    // Rewriting layer: the login answer loses its refresh token, as with Google without prompt=consent.
    const { bff, time } = await bffWith();
    provider.setRewrite('/token', rewriteJson(({ refresh_token: _dropped, ...json }) => json));
    const browser = new TestBrowser(bff.app);
    try {
      expect((await browser.login()).statusCode).toBe(302);
    } finally {
      provider.setRewrite('/token', null);
    }
    expect((await browser.request('/api/orders')).statusCode).toBe(200);
    const tokenCalls = provider.tokenRequests.length;
    time.advance(61);
    const response = await browser.request('/api/orders');
    expect(response.statusCode).toBe(401);
    expect(response.json().error).toBe('login_required');
    expect(browser.cookies.get(SESSION)).toBeUndefined();
    expect(provider.tokenRequests.length).toBe(tokenCalls);
  });

  it('when the provider sends the browser back with unauthorized_client, sign-in fails with 400 and an error log naming the client keys', async () => {
    // The authorization response is changed before the browser delivers it: oidc-provider refuses
    // such a client with other errors (it will not register a code-flow client without the grant).
    const { bff } = await bffWith();
    const browser = new TestBrowser(bff.app);
    const redirect = new URL(await completeProviderLogin(await browser.startLogin()));
    const back = new URL(redirect.pathname, redirect);
    back.search = new URLSearchParams({ error: 'unauthorized_client', error_description: 'client not allowed', state: redirect.searchParams.get('state')!, iss: provider.issuer }).toString();
    const callback = await browser.callback(back.href);
    expect(callback.statusCode).toBe(400);
    expect(callback.json().error_description).toMatch(/refused this application \(unauthorized_client\)/);
    expect(logged(bff, /sign-in failed: the provider refused this client/)[0]).toMatchObject({ level: 50, oauthError: 'unauthorized_client', check: ['oidc.clientId', 'oidc.clientSecret', 'oidc.clientAuth'] });
  });

  it('logs in when oidc.issuer is the bare origin written with a trailing slash (the same URL as the reported issuer)', async () => {
    await setup();
    const { bff } = await bffWith({ issuer: `${provider.issuer}/` });
    const browser = new TestBrowser(bff.app);
    expect((await browser.login()).statusCode).toBe(302);
    expect((await browser.request('/api/orders')).statusCode).toBe(200);
  });

  it('accepts a refreshed ID token whose aud is an array and that carries no nonce', async () => {
    // Synthesized token response (test/support/provider.ts): oidc-provider's own ID tokens have a string aud.
    const { browser } = await dueSession();
    provider.setFault('/token', { tokenResponse: { idToken: { claims: { aud: [provider.clients.basic.clientId, 'https://api.example.test'], azp: provider.clients.basic.clientId, name: 'Alice Refreshed' } } } });
    try {
      const response = await browser.request('/auth/refresh', { method: 'POST' });
      expect(response.statusCode).toBe(200);
      expect(response.json().claims.name).toBe('Alice Refreshed');
    } finally {
      provider.setFault('/token', null);
    }
  });

  it('refuses a DPoP-bound token at sign-in with a log that says to turn DPoP binding off', async () => {
    // Rewriting layer: oidc-provider only issues DPoP tokens to requests with a DPoP proof.
    const { bff } = await bffWith();
    provider.setRewrite('/token', rewriteJson((json) => ({ ...json, token_type: 'DPoP' })));
    try {
      const callback = await new TestBrowser(bff.app).login();
      expect(callback.statusCode).toBe(400);
      expect(String(logged(bff, /sign-in failed/)[0]?.err)).toMatch(/DPoP.*turn DPoP binding off/);
    } finally {
      provider.setRewrite('/token', null);
    }
  });

  it('answers 503 (never 500) on a client-credentials route when the provider refuses the scope', async () => {
    // Injected: a 400 invalid_scope for the client-credentials grant.
    const { bff } = await bffWith({}, { routes: [{ prefix: '/api', upstream: upstream.url, token: 'client', anonymous: true, clientScopes: ['reports'] }] });
    provider.setFault('/token', { status: 400, body: { error: 'invalid_scope' } });
    try {
      const response = await new TestBrowser(bff.app).request('/api/orders');
      expect(response.statusCode).toBe(503);
      expect(response.json().error).toBe('idp_unavailable');
      expect(logged(bff, /client credentials token unavailable/)[0]).toMatchObject({ level: 50, oauthError: 'invalid_scope', check: ['oidc.scopes', 'oidc.clientId', 'oidc.clientSecret', 'oidc.clientAuth'] });
    } finally {
      provider.setFault('/token', null);
    }
  });
});

describe('setup mistakes are logged as configuration errors naming what to fix', () => {
  const discoveryFailures = (bff: TestBff) => bff.logs.filter((l) => l.msg === 'provider discovery failed');

  const failingBff = async (issuer: string) => {
    const bff = await startBff({ oidc: { issuer, clientId: 'bff', clientSecret: 'secret' }, session: { secrets: [SECRET] } }, { waitForProvider: false });
    cleanups.push(() => bff.app.close());
    await expect.poll(() => discoveryFailures(bff).length, { timeout: 5_000, interval: 20 }).toBeGreaterThan(0);
    return discoveryFailures(bff)[0]!;
  };

  it('a wrong issuer path: the discovery URL and its HTTP status, at error level, with oidc.issuer to check', async () => {
    const p = await startProvider({ redirectUris: [REDIRECT_URI], mountPath: '/realms/x' });
    cleanups.push(() => p.stop());
    const wrong = p.issuer.replace('/realms/x', '/realms/y');
    const line = await failingBff(wrong);
    expect(line).toMatchObject({ level: 50, fault: 'configuration', url: `${wrong}/.well-known/openid-configuration`, status: 404, check: ['oidc.issuer'] });
  });

  it('an issuer that differs from the one the provider reports (trailing slash after a path): both issuers, at error level', async () => {
    const p = await startProvider({ redirectUris: [REDIRECT_URI], mountPath: '/realms/x' });
    cleanups.push(() => p.stop());
    const line = await failingBff(`${p.issuer}/`);
    expect(line).toMatchObject({ level: 50, fault: 'configuration', configuredIssuer: `${p.issuer}/`, reportedIssuer: p.issuer, check: ['oidc.issuer'] });
  });

  it('localhost instead of 127.0.0.1: both issuers, at error level', async () => {
    const p = await startProvider({ redirectUris: [REDIRECT_URI] });
    cleanups.push(() => p.stop());
    const localhost = p.issuer.replace('127.0.0.1', 'localhost');
    const line = await failingBff(localhost);
    expect(line).toMatchObject({ level: 50, configuredIssuer: localhost, reportedIssuer: p.issuer });
  });

  it('a provider that is down: the network cause (ECONNREFUSED), as an outage at warn level', async () => {
    const p = await startProvider({ redirectUris: [REDIRECT_URI] });
    await p.stop();
    const line = await failingBff(p.issuer);
    expect(line).toMatchObject({ level: 40, fault: 'outage' });
    expect(String(line.cause)).toMatch(/^ECONNREFUSED/);
  });
});
