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
