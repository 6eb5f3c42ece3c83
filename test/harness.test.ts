import { createServer } from 'node:http';

import { decodeJwt, importJWK } from 'jose';
import * as client from 'openid-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { CookieJar, browserFetch, completeProviderLogin, completeProviderLogout } from './support/browser.js';
import { closeServer, freePort, listen, originOf } from './support/ports.js';
import { startProvider, type TestProvider } from './support/provider.js';
import { startUpstream, type EchoBody } from './support/upstream.js';

const discover = (provider: TestProvider, clientId: string, secret?: string, auth?: client.ClientAuth) =>
  client.discovery(new URL(provider.issuer), clientId, secret, auth, { execute: [client.allowInsecureRequests] });

/** Full authorization code + PKCE flow with openid-client, driving the login with completeProviderLogin. */
async function login(
  config: client.Configuration,
  redirectUri: string,
  opts: { login?: string; jar?: CookieJar; scope?: string } = {},
) {
  const pkceCodeVerifier = client.randomPKCECodeVerifier();
  const expectedState = client.randomState();
  const expectedNonce = client.randomNonce();
  const authorizationUrl = client.buildAuthorizationUrl(config, {
    redirect_uri: redirectUri,
    scope: opts.scope ?? 'openid profile email',
    code_challenge: await client.calculatePKCECodeChallenge(pkceCodeVerifier),
    code_challenge_method: 'S256',
    state: expectedState,
    nonce: expectedNonce,
  });
  const callbackUrl = await completeProviderLogin(authorizationUrl.href, {
    login: opts.login ?? 'alice',
    ...(opts.jar ? { jar: opts.jar } : {}),
  });
  const tokens = await client.authorizationCodeGrant(config, new URL(callbackUrl), {
    pkceCodeVerifier,
    expectedState,
    expectedNonce,
  });
  return { tokens, callbackUrl };
}

async function expectInvalidGrant(promise: Promise<unknown>) {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(client.ResponseBodyError);
  expect((err as client.ResponseBodyError).error).toBe('invalid_grant');
}

describe('harness: rotating provider + upstream', () => {
  const bigClaim = 'x'.repeat(6000);
  let op: TestProvider;
  let upstream: Awaited<ReturnType<typeof startUpstream>>;
  let redirectUri: string;

  beforeAll(async () => {
    // The BFF port is "unknown" at provider start: register the redirect URI afterwards.
    op = await startProvider({ redirectUris: [], extraClaims: { big_claim: bigClaim } });
    redirectUri = `${originOf(await freePort())}/auth/callback`;
    await op.setRedirectUris([redirectUri]);
    upstream = await startUpstream({
      introspectionEndpoint: op.endpoints.introspection,
      clientId: op.clients.api.clientId,
      clientSecret: op.clients.api.clientSecret,
    });
  });

  afterAll(async () => {
    await upstream?.close();
    await op?.stop();
    expect(op?.serverErrors ?? []).toEqual([]);
  });

  it('(a) authorization code + PKCE with client_secret_basic yields access, refresh and ID tokens', async () => {
    const config = await discover(op, op.clients.basic.clientId, op.clients.basic.clientSecret);
    const metadata = config.serverMetadata();
    expect(metadata.issuer).toBe(op.issuer);
    expect(metadata.token_endpoint).toBe(op.endpoints.token);
    expect(metadata.introspection_endpoint).toBe(op.endpoints.introspection);
    expect(metadata.revocation_endpoint).toBe(op.endpoints.revocation);
    expect(metadata.end_session_endpoint).toBe(op.endpoints.endSession);
    expect(metadata.authorization_endpoint).toBe(op.endpoints.authorization);
    const { tokens, callbackUrl } = await login(config, redirectUri);

    const callback = new URL(callbackUrl);
    expect(`${callback.origin}${callback.pathname}`).toBe(redirectUri);
    expect(callback.searchParams.get('code')).toBeTruthy();
    expect(callback.searchParams.get('state')).toBeTruthy();
    expect(callback.searchParams.get('iss')).toBe(op.issuer);

    expect(tokens.access_token).toBeTruthy();
    expect(tokens.refresh_token).toBeTruthy();
    expect(tokens.id_token).toBeTruthy();
    expect(tokens.expires_in).toBeGreaterThan(50);
    expect(tokens.expires_in).toBeLessThanOrEqual(60);
    const claims = tokens.claims()!;
    expect(claims.sub).toBe('alice');
    expect(claims.iss).toBe(op.issuer);
    expect(claims.email).toBe('alice@example.test');
    expect(claims.sid).toBeUndefined(); // only with a back-channel logout URI (see the logout test)
    expect(op.issuedTokens()).toEqual(
      expect.arrayContaining([tokens.access_token, tokens.refresh_token, tokens.id_token]),
    );
  });

  it('(b) the upstream answers 200 with the access token and 401 without / with a bad one', async () => {
    const config = await discover(op, op.clients.basic.clientId, op.clients.basic.clientSecret);
    const { tokens } = await login(config, redirectUri, { login: 'bob' });

    const ok = await fetch(`${upstream.url}/things/1?x=1&x=2`, {
      method: 'POST',
      headers: { authorization: `Bearer ${tokens.access_token}`, 'content-type': 'text/plain' },
      body: 'hello',
    });
    expect(ok.status).toBe(200);
    const echo = (await ok.json()) as EchoBody;
    expect(echo).toMatchObject({ method: 'POST', path: '/things/1', query: { x: ['1', '2'] }, sub: 'bob', body: 'hello' });
    const recorded = upstream.requests.at(-1)!;
    expect(recorded.tokenActive).toBe(true);
    expect(recorded.sub).toBe('bob');
    expect(recorded.body.toString()).toBe('hello');

    const missing = await fetch(`${upstream.url}/things/1`);
    expect(missing.status).toBe(401);
    expect(missing.headers.get('www-authenticate')).toBe('Bearer error="invalid_token"');
    expect(await missing.json()).toEqual({ error: 'invalid_token' });

    const bad = await fetch(`${upstream.url}/things/1`, { headers: { authorization: 'Bearer nope' } });
    expect(bad.status).toBe(401);

    const pub = await fetch(`${upstream.url}/public/info`);
    expect(pub.status).toBe(200);

    const status = await fetch(`${upstream.url}/api/status/503`, { headers: { authorization: `Bearer ${tokens.access_token}` } });
    expect(status.status).toBe(503);
    const bytes = await fetch(`${upstream.url}/bytes?n=200000`, { headers: { authorization: `Bearer ${tokens.access_token}` } });
    expect((await bytes.arrayBuffer()).byteLength).toBe(200000);
    const cookie = await fetch(`${upstream.url}/set-cookie`, { headers: { authorization: `Bearer ${tokens.access_token}` } });
    expect(cookie.headers.getSetCookie()).toHaveLength(1);

    // Revoking the user's grants kills the access token at the upstream.
    expect(await op.revokeGrantsOf('bob')).toBe(1);
    const revoked = await fetch(`${upstream.url}/things/1`, { headers: { authorization: `Bearer ${tokens.access_token}` } });
    expect(revoked.status).toBe(401);
    await expectInvalidGrant(client.refreshTokenGrant(config, tokens.refresh_token!));
  });

  it('(c) reusing a rotated refresh token fails with invalid_grant and revokes the new one too', async () => {
    const config = await discover(op, op.clients.basic.clientId, op.clients.basic.clientSecret);
    const { tokens } = await login(config, redirectUri, { login: 'carol' });

    const first = await client.refreshTokenGrant(config, tokens.refresh_token!);
    expect(first.refresh_token).toBeTruthy();
    expect(first.refresh_token).not.toBe(tokens.refresh_token);
    expect(first.access_token).not.toBe(tokens.access_token);

    await expectInvalidGrant(client.refreshTokenGrant(config, tokens.refresh_token!)); // reuse
    await expectInvalidGrant(client.refreshTokenGrant(config, first.refresh_token!)); // grant revoked
    const res = await fetch(`${upstream.url}/x`, { headers: { authorization: `Bearer ${first.access_token}` } });
    expect(res.status).toBe(401);
  });

  it('(e) tokenRequests records every token endpoint call, failed ones included', async () => {
    const config = await discover(op, op.clients.basic.clientId, op.clients.basic.clientSecret);
    const before = op.tokenRequests.length;
    const { tokens } = await login(config, redirectUri, { login: 'dave' });
    await client.refreshTokenGrant(config, tokens.refresh_token!);
    await expectInvalidGrant(client.refreshTokenGrant(config, 'not-a-refresh-token'));
    const wrongSecret = await discover(op, op.clients.basic.clientId, 'wrong-secret');
    await expect(client.refreshTokenGrant(wrongSecret, 'whatever')).rejects.toThrow();

    const recorded = op.tokenRequests.slice(before);
    expect(recorded.map((r) => [r.grantType, r.clientId, r.status, r.error])).toEqual([
      ['authorization_code', 'bff-basic', 200, undefined],
      ['refresh_token', 'bff-basic', 200, undefined],
      ['refresh_token', 'bff-basic', 400, 'invalid_grant'],
      ['refresh_token', 'bff-basic', 401, 'invalid_client'],
    ]);
    for (const r of recorded) expect(r.at).toBeGreaterThan(Date.now() - 30_000);
  });

  it('(g) extraClaims (~6000 chars) are in the ID token', async () => {
    const config = await discover(op, op.clients.basic.clientId, op.clients.basic.clientSecret);
    const { tokens } = await login(config, redirectUri, { login: 'erin' });
    expect(tokens.claims()!.big_claim).toBe(bigClaim);
    expect(tokens.id_token!.length).toBeGreaterThan(8000);
  });

  it('(h) private_key_jwt, client_secret_post and public clients can do the code exchange', async () => {
    const { privateKeyJwk, alg } = op.clients.jwt;
    const key = (await importJWK(privateKeyJwk, alg)) as client.CryptoKey;
    const jwtConfig = await discover(
      op,
      op.clients.jwt.clientId,
      undefined,
      client.PrivateKeyJwt({ key, kid: String(privateKeyJwk.kid) }),
    );
    const viaJwt = await login(jwtConfig, redirectUri, { login: 'frank' });
    expect(viaJwt.tokens.refresh_token).toBeTruthy();
    expect((await client.refreshTokenGrant(jwtConfig, viaJwt.tokens.refresh_token!)).access_token).toBeTruthy();

    const postConfig = await discover(
      op,
      op.clients.post.clientId,
      undefined,
      client.ClientSecretPost(op.clients.post.clientSecret),
    );
    const viaPost = await login(postConfig, redirectUri, { login: 'grace' });
    expect(viaPost.tokens.access_token).toBeTruthy();

    const publicConfig = await discover(op, op.clients.publicClient.clientId, undefined, client.None());
    const viaPublic = await login(publicConfig, redirectUri, { login: 'heidi' });
    expect(viaPublic.tokens.refresh_token).toBeTruthy();

    const last = op.tokenRequests.filter((r) => r.grantType === 'authorization_code').slice(-3);
    expect(last.map((r) => r.clientId)).toEqual(['bff-jwt', 'bff-post', 'bff-public']);
  });

  it('client_credentials with the api client, and consent denial redirects with an error', async () => {
    const apiConfig = await discover(op, op.clients.api.clientId, op.clients.api.clientSecret);
    const cc = await client.clientCredentialsGrant(apiConfig);
    const res = await fetch(`${upstream.url}/x`, { headers: { authorization: `Bearer ${cc.access_token}` } });
    expect(res.status).toBe(200);

    const config = await discover(op, op.clients.basic.clientId, op.clients.basic.clientSecret);
    const url = client.buildAuthorizationUrl(config, {
      redirect_uri: redirectUri,
      scope: 'openid',
      code_challenge: await client.calculatePKCECodeChallenge(client.randomPKCECodeVerifier()),
      code_challenge_method: 'S256',
      state: 'st',
    });
    const denied = new URL(await completeProviderLogin(url.href, { consent: false }));
    expect(denied.searchParams.get('error')).toBe('access_denied');
    expect(denied.searchParams.get('state')).toBe('st');

    // PKCE is required even for confidential clients: an error redirect, returned as well.
    const noPkce = client.buildAuthorizationUrl(config, { redirect_uri: redirectUri, scope: 'openid', state: 'st2' });
    const error = new URL(await completeProviderLogin(noPkce.href));
    expect(error.searchParams.get('error')).toBe('invalid_request');
  });

  it('RP-initiated logout (same jar) ends the provider session and delivers a back-channel logout token', async () => {
    const received: string[] = [];
    const receiver = createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        received.push(body);
        res.end();
      });
    });
    const receiverPort = await listen(receiver);
    try {
      const postLogout = `${new URL(redirectUri).origin}/logged-out`;
      await op.updateBffClients({
        postLogoutRedirectUris: [postLogout],
        backchannelLogoutUri: `${originOf(receiverPort)}/backchannel-logout`,
      });
      const config = await discover(op, op.clients.basic.clientId, op.clients.basic.clientSecret);
      const jar = new CookieJar();
      const { tokens } = await login(config, redirectUri, { login: 'ivan', jar });
      expect(jar.get(`${op.issuer}/auth`, '_session')).toBeTruthy();
      const sid = tokens.claims()!.sid;
      expect(sid).toBeTruthy();

      const endSession = client.buildEndSessionUrl(config, {
        id_token_hint: tokens.id_token!,
        post_logout_redirect_uri: postLogout,
        state: 'bye',
      });
      const after = new URL(await completeProviderLogout(endSession.href, { jar }));
      expect(`${after.origin}${after.pathname}`).toBe(postLogout);
      expect(after.searchParams.get('state')).toBe('bye');

      expect(op.backchannelLogouts.at(-1)).toMatchObject({ clientId: 'bff-basic', accountId: 'ivan', sid, ok: true });
      expect(received).toHaveLength(1);
      const logoutToken = decodeJwt(new URLSearchParams(received[0]).get('logout_token')!);
      expect(logoutToken).toMatchObject({ iss: op.issuer, aud: 'bff-basic', sub: 'ivan', sid });
      // the refresh token died with the grant
      await expectInvalidGrant(client.refreshTokenGrant(config, tokens.refresh_token!));
    } finally {
      await op.updateBffClients({ backchannelLogoutUri: null });
      await closeServer(receiver);
    }
  });
});

describe('harness: non-rotating provider', () => {
  let op: TestProvider;
  const redirectUri = 'http://127.0.0.1:1/auth/callback';

  beforeAll(async () => {
    op = await startProvider({ redirectUris: [redirectUri], rotateRefreshToken: false, accessTokenTtlSeconds: 5 });
  });
  afterAll(async () => {
    await op?.stop();
  });

  it('(d) the same refresh token works twice when rotation is off', async () => {
    const config = await discover(op, op.clients.post.clientId, undefined, client.ClientSecretPost(op.clients.post.clientSecret));
    const { tokens } = await login(config, redirectUri);
    expect(tokens.expires_in).toBeLessThanOrEqual(5);
    const one = await client.refreshTokenGrant(config, tokens.refresh_token!);
    const two = await client.refreshTokenGrant(config, tokens.refresh_token!);
    expect(one.access_token).not.toBe(two.access_token);
    expect(one.refresh_token ?? tokens.refresh_token).toBe(tokens.refresh_token);
    expect(two.refresh_token ?? tokens.refresh_token).toBe(tokens.refresh_token);

    // revokeAccessTokensOf kills access tokens only; the refresh token keeps working
    expect(await op.revokeAccessTokensOf('alice')).toBe(3);
    expect(op.state.store.list('AccessToken')).toEqual([]);
    expect((await client.refreshTokenGrant(config, tokens.refresh_token!)).access_token).toBeTruthy();
  });

  it('(f) pause() makes the issuer unreachable, resume() brings it back on the same port', async () => {
    const config = await discover(op, op.clients.basic.clientId, op.clients.basic.clientSecret);
    const { tokens } = await login(config, redirectUri);
    const discoveryUrl = `${op.issuer}/.well-known/openid-configuration`;
    // open a keep-alive connection first: pause() must cut it too
    expect((await fetch(discoveryUrl)).status).toBe(200);

    await op.pause();
    await expect(fetch(discoveryUrl)).rejects.toThrow();
    await expect(client.refreshTokenGrant(config, tokens.refresh_token!)).rejects.toThrow();

    await op.resume();
    expect((await fetch(discoveryUrl)).status).toBe(200);
    // same provider instance and state: the refresh token still works
    expect((await client.refreshTokenGrant(config, tokens.refresh_token!)).access_token).toBeTruthy();
  });

  it('stop() + startProvider({ port, state }) continues with the same sessions and tokens', async () => {
    const config = await discover(op, op.clients.basic.clientId, op.clients.basic.clientSecret);
    const jar = new CookieJar();
    const { tokens } = await login(config, redirectUri, { login: 'judy', jar });
    await op.stop();
    const again = await startProvider({ redirectUris: [redirectUri], rotateRefreshToken: false, port: op.port, state: op.state });
    try {
      expect(again.issuer).toBe(op.issuer);
      expect((await client.refreshTokenGrant(config, tokens.refresh_token!)).access_token).toBeTruthy();
      // SSO: the provider session survived, so no login form this time
      const url = client.buildAuthorizationUrl(config, {
        redirect_uri: redirectUri,
        scope: 'openid',
        code_challenge: await client.calculatePKCECodeChallenge(client.randomPKCECodeVerifier()),
        code_challenge_method: 'S256',
      });
      const res = await browserFetch(jar, url);
      expect(res.status).toBe(303);
      expect(new URL(res.headers.get('location')!).searchParams.get('code')).toBeTruthy();
    } finally {
      await again.stop();
    }
  });
});

describe('CookieJar', () => {
  it('stores per origin, honours Path, Max-Age and Expires', () => {
    const jar = new CookieJar();
    const a = 'http://127.0.0.1:1000';
    jar.setCookie(`${a}/x/y`, 'p=1'); // default path /x
    jar.setCookie(a, 'r=2; Path=/; HttpOnly; SameSite=Lax');
    jar.setCookie(a, 'deep=3; Path=/auth/abc');
    expect(jar.cookieHeader(`${a}/x/z`)).toBe('p=1; r=2');
    expect(jar.cookieHeader(`${a}/xy`)).toBe('r=2');
    expect(jar.cookieHeader(`${a}/auth/abc`)).toBe('deep=3; r=2');
    expect(jar.cookieHeader('http://127.0.0.1:1001/')).toBeUndefined();
    jar.setCookie(a, 'r=; Path=/; Max-Age=0');
    expect(jar.get(`${a}/`, 'r')).toBeUndefined();
    jar.setCookie(a, 'e=1; Path=/');
    jar.setCookie(a, 'e=; Path=/; Expires=Thu, 01 Jan 1970 00:00:00 GMT');
    expect(jar.get(`${a}/`, 'e')).toBeUndefined();
    jar.setCookie(a, 's=1; Path=/; Secure');
    expect(jar.get(`${a}/`, 's')).toBe('1'); // loopback counts as secure
    expect(jar.cookieHeader('http://example.test/')).toBeUndefined();
  });
});
