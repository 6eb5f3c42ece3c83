/**
 * DPoP (issue 22, RFC 9449): sender-constrained tokens toward the provider and the APIs.
 * The real oidc-provider with DPoP on and the BFF clients registered for DPoP-bound tokens
 * (dpop_bound_access_tokens: a token request without a proof is refused), JWT access tokens
 * carrying cnf.jkt; a second provider that requires its DPoP nonce. Upstreams that verify
 * DPoP completely (test/support/dpop-upstream.ts): proof signature, typ, alg, htm/htu, iat,
 * jti replay, ath, and the token's cnf.jkt against the proof key's thumbprint; and that can
 * demand their own nonce.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash, randomUUID } from 'node:crypto';
import { decodeJwt, decodeProtectedHeader, exportJWK, generateKeyPair, SignJWT, type JWK } from 'jose';
import { startProvider, RESOURCE_SERVER, type TestProvider, type TokenRequestRecord } from './support/provider.js';
import { startDpopUpstream, type DpopUpstream } from './support/dpop-upstream.js';
import { startUpstream, type Upstream } from './support/upstream.js';
import { REDIRECT_URI, SECRET, startBff, TestBrowser, type TestBff } from './support/bff.js';
import { Sealer } from '../src/state/sealer.js';
import type { SessionRecord } from '../src/state/record.js';
import { redisServerInstalled, startRedisServer, uniquePrefix, warnRedisSkipped, type RedisServer } from './support/redis.js';

const SESSION = '__Host-th_session';
const hasRedis = redisServerInstalled();
if (!hasRedis) warnRedisSkipped('test/dpop.test.ts (the redis store)');
let redisServer: RedisServer | undefined;
let provider: TestProvider;
let nonceProvider: TestProvider;
let api: DpopUpstream;
let reports: DpopUpstream;
let plain: Upstream;
let nonceApi: DpopUpstream;
const time = { now: Date.now() };
const started: TestBff[] = [];

beforeAll(async () => {
  provider = await startProvider({
    redirectUris: [REDIRECT_URI],
    accessTokenFormat: 'jwt',
    dpop: { boundClients: true },
    tokenExchange: { audiences: { reports: { scope: 'reports:read' } } },
  });
  nonceProvider = await startProvider({ redirectUris: [REDIRECT_URI], accessTokenFormat: 'jwt', dpop: { boundClients: true, requireNonce: true } });
  api = await startDpopUpstream({ jwksUri: provider.endpoints.jwks, issuer: provider.issuer, audience: RESOURCE_SERVER });
  reports = await startDpopUpstream({ jwksUri: provider.endpoints.jwks, issuer: provider.issuer, audience: 'reports' });
  nonceApi = await startDpopUpstream({ jwksUri: nonceProvider.endpoints.jwks, issuer: nonceProvider.issuer, audience: RESOURCE_SERVER });
  if (hasRedis) redisServer = await startRedisServer();
  plain = await startUpstream({
    introspectionEndpoint: provider.endpoints.introspection,
    clientId: provider.clients.api.clientId,
    clientSecret: provider.clients.api.clientSecret,
    jwt: { jwksUri: provider.endpoints.jwks, issuer: provider.issuer, audience: RESOURCE_SERVER, only: true },
  });
});

afterAll(async () => {
  for (const bff of started) await bff.app.close();
  for (const upstream of [api, reports, nonceApi, plain]) await upstream?.close();
  await provider?.stop();
  await nonceProvider?.stop();
  await redisServer?.stop();
});

function config(options: { session?: Record<string, unknown>; oidc?: Record<string, unknown>; op?: TestProvider; upstream?: DpopUpstream } = {}): Record<string, unknown> {
  const op = options.op ?? provider;
  return {
    oidc: { issuer: op.issuer, clientId: op.clients.basic.clientId, clientSecret: op.clients.basic.clientSecret, dpop: true, ...options.oidc },
    session: { secrets: [SECRET], store: 'cookie', ...options.session },
    routes: [
      { prefix: '/api', upstream: (options.upstream ?? api).url, dpop: true },
      { prefix: '/client', upstream: (options.upstream ?? api).url, token: 'client', dpop: true },
      { prefix: '/reports', upstream: reports.url, token: 'exchange', exchange: { audience: 'reports', scope: 'reports:read' }, dpop: true },
      { prefix: '/plain', upstream: plain.url },
    ],
  };
}

async function bff(options: Parameters<typeof config>[0] = {}): Promise<TestBff> {
  const instance = await startBff(config(options), { now: () => time.now });
  started.push(instance);
  return instance;
}

async function signedIn(instance: TestBff, login = 'alice'): Promise<TestBrowser> {
  const browser = new TestBrowser(instance.app);
  const callback = await browser.login({ login });
  expect(callback.statusCode).toBe(302);
  return browser;
}

const since = (op: TestProvider, from: number, grantType?: string): TokenRequestRecord[] =>
  op.tokenRequests.slice(from).filter((r) => grantType === undefined || r.grantType === grantType);

/** The session record in the browser's cookie (cookie store), unsealed as token-handler would. */
async function recordOf(browser: TestBrowser): Promise<SessionRecord> {
  const sealed = [...browser.cookies].filter(([name]) => name.startsWith(SESSION)).sort(([a], [b]) => a.localeCompare(b)).map(([, value]) => value).join('');
  const record = await new Sealer([SECRET]).unseal<SessionRecord>(sealed);
  if (!record) throw new Error('no session record in the cookie');
  return record;
}

function cookieBytes(browser: TestBrowser): number {
  let bytes = 0;
  for (const [name, value] of browser.cookies) if (name.startsWith(SESSION)) bytes += name.length + 1 + value.length;
  return bytes;
}

describe('DPoP toward the provider and the APIs', () => {
  it('login binds the tokens to the session key: the upstream gets Authorization: DPoP with a proof it verifies', async () => {
    const instance = await bff();
    const from = provider.tokenRequests.length;
    const browser = await signedIn(instance);
    const exchange = since(provider, from, 'authorization_code');
    expect(exchange.map((r) => r.status)).toEqual([200]);
    expect(exchange[0]!.dpopJkt).toBeDefined();

    const response = await browser.request('/api/orders?page=2');
    expect(response.statusCode, response.body).toBe(200);
    const seen = api.requests.at(-1)!;
    expect(seen.ok, seen.reason).toBe(true);
    expect(String(seen.headers.authorization)).toMatch(/^DPoP /);
    expect(seen.jkt).toBe(exchange[0]!.dpopJkt);
    // The token is bound to the key: cnf.jkt (the upstream checked it against the proof).
    expect((decodeJwt(seen.token!).cnf as { jkt: string }).jkt).toBe(seen.jkt);
    // htu: the upstream URL actually called, without the query.
    const proof = decodeJwt(String(seen.headers.dpop));
    expect(proof).toMatchObject({ htm: 'GET', htu: `${api.url}/orders` });
    expect(decodeProtectedHeader(String(seen.headers.dpop))).toMatchObject({ typ: 'dpop+jwt', alg: 'ES256', jwk: { kty: 'EC', crv: 'P-256' } });
    expect(decodeProtectedHeader(String(seen.headers.dpop)).jwk).not.toHaveProperty('d');
  });

  it('every request carries a fresh proof (new jti, its own method and URL), and a body is proved like a GET', async () => {
    const instance = await bff();
    const browser = await signedIn(instance);
    const before = api.requests.length;
    expect((await browser.request('/api/a')).statusCode).toBe(200);
    expect((await browser.request('/api/a')).statusCode).toBe(200);
    const post = await browser.request('/api/b/c', { method: 'POST', payload: { n: 1 } });
    expect(post.statusCode, post.body).toBe(200);
    const seen = api.requests.slice(before);
    expect(seen.map((r) => r.ok)).toEqual([true, true, true]);
    const proofs = seen.map((r) => decodeJwt(String(r.headers.dpop)));
    expect(new Set(proofs.map((p) => p.jti)).size).toBe(3);
    expect(proofs.map((p) => `${String(p.htm)} ${String(p.htu)}`)).toEqual([`GET ${api.url}/a`, `GET ${api.url}/a`, `POST ${api.url}/b/c`]);
    expect(JSON.parse(post.body)).toMatchObject({ method: 'POST', body: '{"n":1}' });
  });

  it('a replayed proof is refused by the upstream: the verifier checks jti, ath, the scheme and the binding', async () => {
    const instance = await bff();
    const browser = await signedIn(instance);
    expect((await browser.request('/api/replay')).statusCode).toBe(200);
    const captured = api.requests.at(-1)!;
    const send = (headers: Record<string, string>) => fetch(`${api.url}/replay`, { headers });
    const replay = await send({ authorization: String(captured.headers.authorization), dpop: String(captured.headers.dpop) });
    expect(replay.status).toBe(401);
    expect(replay.headers.get('www-authenticate')).toContain('invalid_dpop_proof');
    expect(api.requests.at(-1)!.reason).toBe('jti replayed');
    // The token alone, as Bearer: refused (it is bound).
    const bearer = await send({ authorization: `Bearer ${captured.token!}` });
    expect(bearer.status).toBe(401);
    expect(api.requests.at(-1)!.reason).toMatch(/presented as Bearer/);
    // Another session's proof with this token: the ath does not match.
    const other = await signedIn(instance, 'bob');
    expect((await other.request('/api/replay')).statusCode).toBe(200);
    const mixed = await send({ authorization: String(captured.headers.authorization), dpop: String(api.requests.at(-1)!.headers.dpop) });
    expect(mixed.status).toBe(401);
    expect(api.requests.at(-1)!.reason).toMatch(/jti replayed|ath does not match/);
  });

  it('the upstream refuses a proof for another method or URL, an old one, one carrying its private key, or none', async () => {
    const instance = await bff();
    const browser = await signedIn(instance);
    expect((await browser.request('/api/probe')).statusCode).toBe(200);
    const token = api.requests.at(-1)!.token!;
    const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
    const publicJwk = await exportJWK(publicKey);
    const sign = (claims: Record<string, unknown>, jwk: JWK = publicJwk) =>
      new SignJWT({ jti: randomUUID(), htm: 'GET', htu: `${api.url}/probe`, iat: Math.floor(Date.now() / 1000), ath: createHash('sha256').update(token).digest('base64url'), ...claims })
        .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk })
        .sign(privateKey);
    const send = async (proof?: string) => {
      const response = await fetch(`${api.url}/probe`, { headers: { authorization: `DPoP ${token}`, ...(proof ? { dpop: proof } : {}) } });
      return `${response.status} ${api.requests.at(-1)!.reason ?? 'ok'}`;
    };
    expect(await send()).toBe('401 0 DPoP headers');
    expect(await send(await sign({ htm: 'POST' }))).toBe('401 htm POST for GET');
    expect(await send(await sign({ htu: `${api.url}/other` }))).toMatch(/^401 htu /);
    expect(await send(await sign({ iat: Math.floor(Date.now() / 1000) - 600 }))).toMatch(/^401 iat .* outside the window/);
    expect(await send(await sign({ ath: 'x' }))).toBe('401 ath does not match the token');
    expect(await send(await sign({}, { ...publicJwk, d: (await exportJWK(privateKey)).d! }))).toMatch(/^401 (the proof header carries a private key|proof not verified)/);
    // A well-formed proof, but by another key than the token is bound to.
    expect(await send(await sign({}))).toMatch(/^401 token cnf.jkt .* is not the proof key/);
  });

  it('each session has its own key', async () => {
    const instance = await bff();
    const alice = await signedIn(instance, 'alice');
    const bob = await signedIn(instance, 'bob');
    expect((await alice.request('/api/me')).statusCode).toBe(200);
    const aliceKey = api.requests.at(-1)!.jkt;
    expect((await bob.request('/api/me')).statusCode).toBe(200);
    const bobKey = api.requests.at(-1)!.jkt;
    expect(aliceKey).toBeDefined();
    expect(bobKey).not.toBe(aliceKey);
  });

  it('a proactive refresh keeps the binding: the refresh proves the same key, the new token is bound to it', async () => {
    const instance = await bff();
    const browser = await signedIn(instance);
    expect((await browser.request('/api/x')).statusCode).toBe(200);
    const first = api.requests.at(-1)!;
    const from = provider.tokenRequests.length;
    time.now += 61_000;
    try {
      const response = await browser.request('/api/x');
      expect(response.statusCode, response.body).toBe(200);
    } finally {
      time.now -= 61_000;
    }
    const refreshes = since(provider, from, 'refresh_token');
    expect(refreshes.map((r) => r.status)).toEqual([200]);
    expect(refreshes[0]!.dpopJkt).toBe(first.jkt);
    const after = api.requests.at(-1)!;
    expect(after.ok).toBe(true);
    expect(after.token).not.toBe(first.token);
    expect(after.jkt).toBe(first.jkt);
  });

  it('a 401 for another reason goes through the reactive refresh: one refresh, the same key, replayed', async () => {
    const instance = await bff();
    const browser = await signedIn(instance);
    expect((await browser.request('/api/x')).statusCode).toBe(200);
    const first = api.requests.at(-1)!;
    api.refuseToken(first.token!);
    const from = provider.tokenRequests.length;
    const response = await browser.request('/api/x', { method: 'PUT', payload: 'kept' });
    expect(response.statusCode, response.body).toBe(200);
    expect(since(provider, from, 'refresh_token').map((r) => `${r.status} ${r.dpopJkt === first.jkt}`)).toEqual(['200 true']);
    expect(api.requests.slice(-2).map((r) => r.reason ?? 'ok')).toEqual(['token refused (revoked)', 'ok']);
    expect(api.requests.at(-1)!.body).toBe('kept');
  });

  it("an upstream's nonce challenge is answered by replaying once with the nonce, without a refresh; the nonce is remembered", async () => {
    const instance = await bff();
    const browser = await signedIn(instance);
    const from = provider.tokenRequests.length;
    api.setRequireNonce(true);
    try {
      const before = api.requests.length;
      const response = await browser.request('/api/nonce', { method: 'POST', payload: { a: 1 } });
      expect(response.statusCode, response.body).toBe(200);
      expect(response.headers['dpop-nonce']).toBeUndefined();
      expect(api.requests.slice(before).map((r) => r.reason ?? 'ok')).toEqual(['no nonce', 'ok']);
      expect(decodeJwt(String(api.requests.at(-1)!.headers.dpop)).nonce).toBe(api.nonce);
      expect(api.requests.at(-1)!.body).toBe('{"a":1}');
      // Remembered: the next request goes with the nonce at once.
      const next = api.requests.length;
      expect((await browser.request('/api/nonce')).statusCode).toBe(200);
      expect(api.requests.slice(next).map((r) => r.reason ?? 'ok')).toEqual(['ok']);
      // A new nonce: challenged once more, replayed once more.
      api.rotateNonce();
      const rotated = api.requests.length;
      expect((await browser.request('/api/nonce')).statusCode).toBe(200);
      expect(api.requests.slice(rotated).map((r) => r.reason ?? 'ok')).toEqual(['stale nonce', 'ok']);
      // Never a refresh for a nonce.
      expect(since(provider, from, 'refresh_token')).toEqual([]);
      const metrics = await instance.app.inject({ method: 'GET', url: '/metrics' });
      expect(metrics.body).toContain('token_handler_dpop_nonce_challenges_total{route="/api",action="replayed",app="default"} 2');
    } finally {
      api.setRequireNonce(false);
    }
  });

  it('a nonce challenge is answered once only: a second one reaches the browser as the 401 it is, with no refresh', async () => {
    const instance = await bff();
    const browser = await signedIn(instance);
    const from = provider.tokenRequests.length;
    const before = api.requests.length;
    api.setChallengeAlways(true);
    try {
      const response = await browser.request('/api/twice');
      expect(response.statusCode).toBe(401);
      expect(JSON.parse(response.body)).toEqual({ error: 'use_dpop_nonce' });
      expect(response.headers['dpop-nonce']).toBeUndefined();
    } finally {
      api.setChallengeAlways(false);
    }
    expect(api.requests.slice(before).map((r) => r.reason)).toEqual(['nonce changed again', 'nonce changed again']);
    expect(since(provider, from, 'refresh_token')).toEqual([]);
  });

  it('client credentials are bound to the process key, not to a session key', async () => {
    const instance = await bff();
    const browser = await signedIn(instance);
    const from = provider.tokenRequests.length;
    const response = await browser.request('/client/jobs');
    expect(response.statusCode, response.body).toBe(200);
    const grant = since(provider, from, 'client_credentials');
    expect(grant.map((r) => r.status)).toEqual([200]);
    const seen = api.requests.at(-1)!;
    expect(seen.ok, seen.reason).toBe(true);
    expect(seen.jkt).toBe(grant[0]!.dpopJkt);
    expect(seen.jkt).not.toBe((await recordOf(browser)).dpopKey);
    expect((await browser.request('/api/x')).statusCode).toBe(200);
    expect(api.requests.at(-1)!.jkt).not.toBe(seen.jkt);
  });

  it("token exchange carries the session's proof: the exchanged token is bound to the session key", async () => {
    const instance = await bff();
    const browser = await signedIn(instance);
    expect((await browser.request('/api/x')).statusCode).toBe(200);
    const sessionKey = api.requests.at(-1)!.jkt;
    const response = await browser.request('/reports/monthly');
    expect(response.statusCode, response.body).toBe(200);
    const seen = reports.requests.at(-1)!;
    expect(seen.ok, seen.reason).toBe(true);
    expect(seen.jkt).toBe(sessionKey);
  });

  it('signing in again as the same user binds the new tokens to a new key; per-API tokens of the old key are obtained again', async () => {
    const instance = await bff();
    const browser = await signedIn(instance, 'alice');
    expect((await browser.request('/reports/r')).statusCode).toBe(200);
    const before = reports.requests.at(-1)!;
    const old = await recordOf(browser);
    expect((await browser.login({ login: 'alice' })).statusCode).toBe(302);
    const record = await recordOf(browser);
    // The same session (a sign-in again of the same user), with a new key.
    expect(record.id).toBe(old.id);
    expect(record.dpopKey).not.toBe(old.dpopKey);
    expect(record.exchangedTokens).toBeUndefined();
    const response = await browser.request('/reports/r');
    expect(response.statusCode, response.body).toBe(200);
    const after = reports.requests.at(-1)!;
    expect(after.ok, after.reason).toBe(true);
    expect(after.jkt).not.toBe(before.jkt);
    expect((await browser.request('/api/x')).statusCode).toBe(200);
    expect(api.requests.at(-1)!.jkt).toBe(after.jkt);
  });

  it('a dpop: false route gets the DPoP-bound token as Bearer, without a proof (and startup said so)', async () => {
    const instance = await bff();
    expect(instance.logs.some((line) => line.route === '/plain' && String(line.msg).includes('dpop: false'))).toBe(true);
    const browser = await signedIn(instance);
    const response = await browser.request('/plain/x', { headers: { dpop: 'a-browser-proof' } });
    expect(response.statusCode, response.body).toBe(200);
    const seen = plain.requests.at(-1)!;
    expect(String(seen.headers.authorization)).toMatch(/^Bearer /);
    expect(seen.headers.dpop).toBeUndefined();
  });

  it('a public client: its refresh token is bound to the session key too, and refreshing with it works', async () => {
    const raw = config({ oidc: { clientId: provider.clients.publicClient.clientId, clientSecret: undefined, clientAuth: 'none' } });
    raw.routes = (raw.routes as Array<{ token?: string }>).filter((route) => route.token !== 'client' && route.token !== 'exchange');
    const instance = await startBff(raw, { now: () => time.now });
    started.push(instance);
    const browser = await signedIn(instance);
    const from = provider.tokenRequests.length;
    const refreshed = await browser.request('/auth/refresh', { method: 'POST' });
    expect(refreshed.statusCode, refreshed.body).toBe(200);
    expect(since(provider, from, 'refresh_token').map((r) => r.status)).toEqual([200]);
    expect((await browser.request('/api/x')).statusCode).toBe(200);
    expect(api.requests.at(-1)!.ok).toBe(true);
  });

  it("the provider's nonce challenge is answered once with its nonce, remembered for every key after", async () => {
    const instance = await bff({ op: nonceProvider, upstream: nonceApi });
    const from = nonceProvider.tokenRequests.length;
    const alice = await signedIn(instance, 'alice');
    const first = since(nonceProvider, from, 'authorization_code');
    expect(first.map((r) => `${r.status} ${r.error ?? ''} ${r.dpopNonce}`)).toEqual(['400 use_dpop_nonce false', '200  true']);
    // Another session, another key: the provider's nonce is already known.
    const next = nonceProvider.tokenRequests.length;
    const bob = await signedIn(instance, 'bob');
    expect(since(nonceProvider, next, 'authorization_code').map((r) => `${r.status} ${r.dpopNonce}`)).toEqual(['200 true']);
    const refresh = nonceProvider.tokenRequests.length;
    expect((await bob.request('/auth/refresh', { method: 'POST' })).statusCode).toBe(200);
    expect(since(nonceProvider, refresh, 'refresh_token').map((r) => `${r.status} ${r.dpopNonce}`)).toEqual(['200 true']);
    const cc = nonceProvider.tokenRequests.length;
    const client = await alice.request('/client/x');
    expect(client.statusCode, client.body).toBe(200);
    expect(since(nonceProvider, cc, 'client_credentials').every((r) => r.dpopNonce)).toBe(true);
    expect((await alice.request('/api/x')).statusCode).toBe(200);
    expect(nonceApi.requests.at(-1)!.ok).toBe(true);
  });

  for (const store of ['cookie', 'memory', ...(hasRedis ? (['redis'] as const) : [])] as const) {
    it(`no key material or proof reaches the browser or the logs (${store} store)`, async () => {
      const instance = await bff({ session: store === 'redis' ? { store, redis: { url: redisServer!.url, keyPrefix: uniquePrefix() } } : { store } });
      const browser = await signedIn(instance);
      api.setRequireNonce(true);
      try {
        expect((await browser.request('/api/secret')).statusCode).toBe(200);
        expect((await browser.request('/client/secret')).statusCode).toBe(200);
        expect((await browser.request('/api/missing/status/404')).statusCode).toBe(404);
      } finally {
        api.setRequireNonce(false);
      }
      expect((await browser.request('/auth/user')).statusCode).toBe(200);
      expect((await browser.request('/auth/refresh', { method: 'POST' })).statusCode).toBe(200);
      expect((await browser.request('/auth/logout', { method: 'POST' })).statusCode).toBe(200);
      const received = browser.received();
      const logs = instance.logText();
      const proofs = api.requests.map((r) => String(r.headers.dpop ?? '')).filter((p) => p.length > 0);
      expect(proofs.length).toBeGreaterThan(0);
      for (const proof of proofs) {
        expect(received).not.toContain(proof);
        expect(logs).not.toContain(proof);
        // Its signature alone, too.
        expect(logs).not.toContain(proof.split('.')[2]);
      }
      expect(received.toLowerCase()).not.toContain('dpop-nonce');
      expect(received).not.toContain(api.nonce);
      expect(logs).not.toMatch(/"d":"/);
      expect(logs).not.toMatch(/dpopKey":"[A-Za-z0-9_-]{20}/);
      if (store === 'cookie') {
        // The key rides sealed in the cookie: present in the record, absent in clear.
        const login = await signedIn(instance);
        const record = await recordOf(login);
        expect(record.dpopKey).toMatch(/^[A-Za-z0-9_-]{43}$/);
        expect(login.received()).not.toContain(record.dpopKey);
        expect(instance.logText()).not.toContain(record.dpopKey);
      }
    });
  }

  it('the session key costs under 100 bytes of cookie', async () => {
    const instance = await bff();
    const browser = await signedIn(instance);
    const record = await recordOf(browser);
    const { dpopKey: _key, ...without } = record;
    const sealer = new Sealer([SECRET]);
    const withKey = (await sealer.seal(record, 3600)).length;
    const withoutKey = (await sealer.seal(without, 3600)).length;
    const cost = withKey - withoutKey;
    console.info(`DPoP session key: +${cost} bytes of sealed cookie (session cookie ${cookieBytes(browser)} bytes in all)`);
    expect(cost).toBeGreaterThan(40);
    expect(cost).toBeLessThan(100);
  });
});
