/**
 * Issue 17, the proxy's part: nothing an outsider sends costs a session or ties the process
 * up. A real provider and a real upstream on 127.0.0.1; a second upstream ("rogue") answers
 * the way a misbehaving or unusual API would (every token rejected, public caching,
 * nameless cookies) and records what reached it.
 */
import { createServer, type IncomingHttpHeaders } from 'node:http';
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PUBLIC_URL, REDIRECT_URI, SECRET, startBff, TestBrowser, type TestBff } from './support/bff.js';
import { rawHttp, rawRequest } from './support/hostile.js';
import { closeServer, listen, originOf } from './support/ports.js';
import { startProvider, type TestProvider } from './support/provider.js';
import { startUpstream, type Upstream } from './support/upstream.js';

interface RogueRequest {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
}

interface Rogue {
  url: string;
  requests: RogueRequest[];
  close(): Promise<void>;
}

/**
 * An upstream that checks no token. Paths (matched on the end): `.../always-401` rejects
 * every token; `.../cacheable` says `public, max-age=3600`; `.../nameless-cookie` sets
 * cookies without a name; anything else echoes method, url and headers.
 */
async function startRogue(): Promise<Rogue> {
  const requests: RogueRequest[] = [];
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      const url = req.url ?? '/';
      requests.push({ method: req.method ?? 'GET', url, headers: req.headers });
      const path = url.split('?', 1)[0]!;
      const json = (status: number, body: unknown, headers: Record<string, string | string[]> = {}) =>
        res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify(body));
      if (path.endsWith('/always-401')) return json(401, { error: 'invalid_token' }, { 'www-authenticate': 'Bearer error="invalid_token"' });
      if (path.endsWith('/cacheable')) return json(200, { ok: true }, { 'cache-control': 'public, max-age=3600' });
      if (path.endsWith('/varies')) return json(200, { ok: true }, { vary: 'Accept-Encoding', 'access-control-allow-origin': '*' });
      if (path.endsWith('/nameless-cookie')) {
        return json(200, { ok: true }, { 'set-cookie': ['=__Host-th_session=evil; Path=/', '__Host-th_session; Path=/', '=other; Path=/', 'kept=1; Path=/'] });
      }
      // Like a real API, never send the bearer token back (the leak guard would rightly flag it).
      const { authorization: _authorization, ...headers } = req.headers;
      return json(200, { method: req.method, url, headers });
    });
  });
  const port = await listen(server);
  return { url: originOf(port), requests, close: () => closeServer(server) };
}

let provider: TestProvider;
let nonRotating: TestProvider;
let upstream: Upstream;
let rogue: Rogue;
const started: TestBff[] = [];

beforeAll(async () => {
  provider = await startProvider({ redirectUris: [REDIRECT_URI], rotateRefreshToken: true });
  nonRotating = await startProvider({ redirectUris: [REDIRECT_URI], rotateRefreshToken: false });
  upstream = await startUpstream({
    introspectionEndpoint: `${provider.issuer}/token/introspection`,
    clientId: provider.clients.api.clientId,
    clientSecret: provider.clients.api.clientSecret,
  });
  rogue = await startRogue();
});

afterAll(async () => {
  for (const bff of started) await bff.app.close();
  await upstream.close();
  await rogue.close();
  await provider.stop();
  await nonRotating.stop();
});

interface Clock {
  now: number;
}

async function bff(extra: Record<string, unknown> = {}, options: { clock?: Clock; idp?: TestProvider } = {}): Promise<TestBff> {
  const idp = options.idp ?? provider;
  const instance = await startBff(
    {
      oidc: { issuer: idp.issuer, clientId: idp.clients.basic.clientId, clientSecret: idp.clients.basic.clientSecret },
      session: { secrets: [SECRET] },
      routes: [
        { prefix: '/api', upstream: upstream.url },
        { prefix: '/client-api', upstream: upstream.url, token: 'client' },
        { prefix: '/none-api', upstream: `${upstream.url}/public`, token: 'none' },
        { prefix: '/open-api', upstream: `${upstream.url}/public`, token: 'none', anonymous: true },
        { prefix: '/rogue', upstream: rogue.url },
        { prefix: '/rogue-client', upstream: rogue.url, token: 'client', anonymous: true },
        { prefix: '/based', upstream: `${rogue.url}/base/` },
        { prefix: '/based-v1', upstream: `${rogue.url}/base`, rewritePrefix: '/v1' },
      ],
      ...extra,
    },
    options.clock ? { now: () => options.clock!.now } : {},
  );
  started.push(instance);
  return instance;
}

async function listening(instance: TestBff): Promise<number> {
  await instance.app.listen({ host: '127.0.0.1', port: 0 });
  const address = instance.app.server.address();
  return typeof address === 'object' && address ? address.port : 0;
}

const grants = (idp: TestProvider, type: string) => idp.tokenRequests.filter((r) => r.grantType === type).length;
const lastRogue = () => rogue.requests[rogue.requests.length - 1]!;

describe('routes need a session unless anonymous', () => {
  it('a token: client route answers 401 login_required to a caller without a session, and no client token is fetched', async () => {
    const { app } = await bff();
    const before = grants(provider, 'client_credentials');
    const calls = upstream.requests.length;
    const response = await new TestBrowser(app).request('/client-api/reports');
    expect(response.statusCode).toBe(401);
    expect(response.json().error).toBe('login_required');
    expect(grants(provider, 'client_credentials')).toBe(before);
    expect(upstream.requests.length).toBe(calls);
  });

  it('a token: client route serves a signed-in user with the client token', async () => {
    const { app } = await bff();
    const browser = new TestBrowser(app);
    await browser.login();
    const response = await browser.request('/client-api/reports');
    expect(response.statusCode).toBe(200);
    expect(upstream.requests[upstream.requests.length - 1]!.introspection?.client_id).toBe(provider.clients.basic.clientId);
  });

  it('a token: none route answers 401 login_required to a caller without a session', async () => {
    const { app } = await bff();
    const response = await new TestBrowser(app).request('/none-api/status');
    expect(response.statusCode).toBe(401);
    expect(response.json().error).toBe('login_required');
  });

  it('a token: none route with anonymous: true lets a caller without a session through', async () => {
    const { app } = await bff();
    const response = await new TestBrowser(app).request('/open-api/status');
    expect(response.statusCode).toBe(200);
  });
});

describe('upstream 401s cost at most one new token', () => {
  it('an upstream that rejects every client token gets the 401 passed on, and the provider issues one token, not one per request', async () => {
    const { app } = await bff();
    const before = grants(provider, 'client_credentials');
    for (let i = 0; i < 5; i++) {
      const response = await new TestBrowser(app).request('/rogue-client/always-401');
      expect(response.statusCode).toBe(401);
    }
    expect(grants(provider, 'client_credentials') - before).toBe(1);
  });

  it('a client token older than a few seconds that the upstream rejects is replaced once, and the request replayed', async () => {
    const clock = { now: Date.now() };
    const { app } = await bff({}, { clock });
    const before = grants(provider, 'client_credentials');
    await new TestBrowser(app).request('/rogue-client/always-401');
    clock.now += 10_000;
    const calls = rogue.requests.length;
    const response = await new TestBrowser(app).request('/rogue-client/always-401');
    expect(response.statusCode).toBe(401);
    expect(rogue.requests.length - calls).toBe(2);
    expect(grants(provider, 'client_credentials') - before).toBe(2);
  });

  it('an upstream that keeps rejecting the user token costs one refresh for that token, even when the old cookie comes again', async () => {
    const { app } = await bff({ refresh: { resultTtlSeconds: 0 } }, { idp: nonRotating });
    const browser = new TestBrowser(app);
    await browser.login();
    const cookie = browser.cookieHeader();
    const before = grants(nonRotating, 'refresh_token');
    for (let i = 0; i < 3; i++) {
      const response = await app.inject({ url: '/rogue/always-401', headers: { cookie, 'x-csrf': '1' } });
      expect(response.statusCode).toBe(401);
      expect(response.json()).toEqual({ error: 'invalid_token' });
    }
    expect(grants(nonRotating, 'refresh_token') - before).toBe(1);
  });

  it('POST /auth/refresh a second time within 10 s answers 429 too_many_requests with Retry-After', async () => {
    const { app } = await bff();
    const browser = new TestBrowser(app);
    await browser.login();
    expect((await browser.request('/auth/refresh', { method: 'POST' })).statusCode).toBe(200);
    const before = grants(provider, 'refresh_token');
    const second = await browser.request('/auth/refresh', { method: 'POST' });
    expect(second.statusCode).toBe(429);
    expect(second.json().error).toBe('too_many_requests');
    expect(Number(second.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    expect(Number(second.headers['retry-after'])).toBeLessThanOrEqual(10);
    expect(grants(provider, 'refresh_token')).toBe(before);
  });
});

describe('caches never keep a session cookie', () => {
  it('a response that slides the session cookie is private, no-store even when the upstream says public, max-age=3600', async () => {
    const clock = { now: Date.now() };
    const { app } = await bff({}, { clock });
    const browser = new TestBrowser(app);
    await browser.login();
    clock.now += 61_000;
    const response = await browser.request('/rogue/cacheable');
    expect(response.statusCode).toBe(200);
    expect(String(response.headers['set-cookie'])).toContain('__Host-th_session=');
    expect(response.headers['cache-control']).toBe('private, no-store');
  });

  it("a response without a cookie of ours keeps the upstream's Cache-Control", async () => {
    const { app } = await bff();
    const browser = new TestBrowser(app);
    await browser.login();
    const response = await browser.request('/rogue/cacheable');
    expect(response.headers['set-cookie']).toBeUndefined();
    expect(response.headers['cache-control']).toBe('public, max-age=3600');
  });
});

describe('forwarding headers are ours', () => {
  it("the upstream sees publicUrl's host and scheme, the client address only, and none of the browser's forwarding or override headers", async () => {
    const { app } = await bff();
    const browser = new TestBrowser(app);
    await browser.login();
    await browser.request('/rogue/echo', {
      headers: {
        host: 'evil.example',
        forwarded: 'for=6.6.6.6;host=evil.example;proto=http',
        'x-forwarded-for': '6.6.6.6',
        'x-forwarded-host': 'evil.example',
        'x-forwarded-proto': 'http',
        'x-forwarded-prefix': '/admin',
        'x-real-ip': '6.6.6.6',
        'x-original-url': '/admin/delete',
        'x-rewrite-url': '/admin/delete',
        'x-http-method-override': 'DELETE',
      },
    });
    const headers = lastRogue().headers;
    expect(headers['x-forwarded-host']).toBe(new URL(PUBLIC_URL).host);
    expect(headers['x-forwarded-proto']).toBe('https');
    expect(headers['x-forwarded-for']).toBe('127.0.0.1');
    for (const name of ['forwarded', 'x-forwarded-prefix', 'x-real-ip', 'x-original-url', 'x-rewrite-url', 'x-http-method-override']) {
      expect(headers[name], name).toBeUndefined();
    }
  });

  it("behind one load balancer (trustProxy: its CIDR) the client address is the one the balancer saw, whatever the client wrote before it", async () => {
    const { app } = await bff({ listen: { trustProxy: ['10.0.0.0/8'] } });
    const browser = new TestBrowser(app);
    await browser.login();
    const response = await app.inject({
      url: '/rogue/echo',
      remoteAddress: '10.0.0.2',
      headers: { cookie: browser.cookieHeader(), 'x-csrf': '1', 'x-forwarded-for': '6.6.6.6, 203.0.113.7' },
    });
    expect(response.statusCode).toBe(200);
    expect(lastRogue().headers['x-forwarded-for']).toBe('203.0.113.7');
  });
});

describe('edges', () => {
  it('an upload with Expect: 100-continue (curl does this above 1 MiB) reaches the upstream', async () => {
    const instance = await bff();
    const browser = new TestBrowser(instance.app);
    await browser.login();
    const port = await listening(instance);
    const body = 'x'.repeat(2048);
    const response = await rawHttp(
      port,
      rawRequest('POST', '/api/upload', [['Cookie', browser.cookieHeader()], ['X-CSRF', '1'], ['Content-Type', 'text/plain'], ['Content-Length', String(body.length)], ['Expect', '100-continue']], body),
    );
    expect(response.text).toMatch(/^HTTP\/1\.1 100 Continue\r\n/);
    const final = /HTTP\/1\.1 (\d{3})[^]*?\r\n\r\n([^]*)$/.exec(response.text.replace(/^HTTP\/1\.1 100 Continue\r\n\r\n/, ''));
    expect(final?.[1]).toBe('200');
    expect(JSON.parse(final?.[2] ?? '{}').body).toBe(body);
  });

  it('/api?x=1 reaches the upstream as /?x=1', async () => {
    const { app } = await bff();
    const browser = new TestBrowser(app);
    await browser.login();
    await browser.request('/rogue?x=1');
    expect(lastRogue().url).toBe('/?x=1');
  });

  it('an upstream with a base path gets /prefix/x as /base/x', async () => {
    const { app } = await bff();
    const browser = new TestBrowser(app);
    await browser.login();
    const response = await browser.request('/based/x?y=2');
    expect(response.statusCode).toBe(200);
    expect(lastRogue().url).toBe('/base/x?y=2');
  });

  it('an upstream with a base path and a rewritePrefix gets /prefix/x as /base/v1/x', async () => {
    const { app } = await bff();
    const browser = new TestBrowser(app);
    await browser.login();
    const response = await browser.request('/based-v1/x');
    expect(response.statusCode).toBe(200);
    expect(lastRogue().url).toBe('/base/v1/x');
  });

  it('an upstream Set-Cookie without a name never reaches the browser', async () => {
    const { app } = await bff();
    const browser = new TestBrowser(app);
    await browser.login();
    const response = await browser.request('/rogue/nameless-cookie');
    expect(response.headers['set-cookie']).toEqual(['kept=1; Path=/']);
  });

  it('a browser that drops mid-body is logged as an abort at info and counted, not as an unhandled error', async () => {
    const instance = await bff();
    const browser = new TestBrowser(instance.app);
    await browser.login();
    const port = await listening(instance);
    await new Promise<void>((resolve) => {
      const socket = connect(port, '127.0.0.1', () => {
        socket.write(
          rawRequest('POST', '/api/upload', [['Cookie', browser.cookieHeader()], ['X-CSRF', '1'], ['Content-Type', 'text/plain'], ['Content-Length', '100000']], 'x'.repeat(1000)),
        );
        setTimeout(() => socket.destroy(), 200);
      });
      socket.on('close', () => resolve());
      socket.on('error', () => undefined);
    });
    let aborted: Record<string, unknown> | undefined;
    for (let i = 0; i < 50 && !aborted; i++) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      aborted = instance.logs.find((line) => String(line.msg).startsWith('request aborted'));
    }
    expect(aborted?.level).toBe(30);
    expect(instance.logs.filter((line) => (line.level as number) >= 50)).toEqual([]);
    const metrics = (await instance.app.inject('/metrics')).body;
    expect(metrics).toMatch(/^token_handler_request_aborts_total\{app="default"\} 1$/m);
  });
});

describe('CORS for csrf.allowedOrigins', () => {
  const ADMIN = 'https://admin.example.test';
  const corsBff = () => bff({ csrf: { allowedOrigins: [ADMIN] } });

  it('a preflight from an allowed origin is answered with credentials, the CSRF header and the methods', async () => {
    const { app } = await corsBff();
    const response = await app.inject({
      method: 'OPTIONS',
      url: '/api/orders',
      headers: { origin: ADMIN, 'access-control-request-method': 'POST', 'access-control-request-headers': 'x-csrf, content-type, x-trace' },
    });
    expect(response.statusCode).toBe(204);
    expect(response.headers['access-control-allow-origin']).toBe(ADMIN);
    expect(response.headers['access-control-allow-credentials']).toBe('true');
    expect(String(response.headers['access-control-allow-headers']).split(', ')).toEqual(expect.arrayContaining(['x-csrf', 'content-type', 'x-trace']));
    expect(String(response.headers['access-control-allow-methods'])).toContain('POST');
    expect(String(response.headers.vary)).toContain('Origin');
    expect(Number(response.headers['access-control-max-age'])).toBeGreaterThan(0);
  });

  it('a preflight for /auth/refresh from an allowed origin is answered too', async () => {
    const { app } = await corsBff();
    const response = await app.inject({ method: 'OPTIONS', url: '/auth/refresh', headers: { origin: ADMIN, 'access-control-request-method': 'POST' } });
    expect(response.statusCode).toBe(204);
    expect(response.headers['access-control-allow-origin']).toBe(ADMIN);
  });

  it('a preflight from any other origin gets 403 csrf_failed', async () => {
    const { app } = await corsBff();
    const response = await app.inject({ method: 'OPTIONS', url: '/api/orders', headers: { origin: 'https://evil.example', 'access-control-request-method': 'POST' } });
    expect(response.statusCode).toBe(403);
    expect(response.json().error).toBe('csrf_failed');
    expect(response.headers['access-control-allow-origin']).toBeUndefined();
  });

  it('a call from an allowed origin gets a response the page may read', async () => {
    const { app } = await corsBff();
    const browser = new TestBrowser(app);
    await browser.login();
    const response = await browser.request('/api/orders', { headers: { origin: ADMIN } });
    expect(response.statusCode).toBe(200);
    expect(response.headers['access-control-allow-origin']).toBe(ADMIN);
    expect(response.headers['access-control-allow-credentials']).toBe('true');
    expect(String(response.headers.vary)).toContain('Origin');
  });

  it("a call from an allowed origin keeps the upstream's Vary and never gets the upstream's own CORS grant", async () => {
    const { app } = await corsBff();
    const browser = new TestBrowser(app);
    await browser.login();
    const response = await browser.request('/rogue/varies', { headers: { origin: ADMIN } });
    expect(response.headers.vary).toBe('Accept-Encoding, Origin');
    expect(response.headers['access-control-allow-origin']).toBe(ADMIN);
    const sameOrigin = await browser.request('/rogue/varies');
    expect(sameOrigin.headers['access-control-allow-origin']).toBeUndefined();
  });
});

describe('bodies are read only after the checks', () => {
  /** Sends the head of a request announcing a body, never the body; resolves with what came back. */
  const headOnly = (port: number, target: string, headers: Array<[string, string]>) => rawHttp(port, rawRequest('POST', target, headers), 3000);

  it('a proxied call without X-CSRF announcing a body is refused with 403 before the body is sent', async () => {
    const instance = await bff();
    const browser = new TestBrowser(instance.app);
    await browser.login();
    const port = await listening(instance);
    const response = await headOnly(port, '/api/upload', [['Cookie', browser.cookieHeader()], ['Content-Type', 'text/plain'], ['Content-Length', '500000']]);
    expect(response.status).toBe(403);
    expect(JSON.parse(response.body).error).toBe('csrf_failed');
  });

  it('a proxied call without a session announcing a body is refused with 401 before the body is sent', async () => {
    const instance = await bff();
    const port = await listening(instance);
    const response = await headOnly(port, '/api/upload', [['X-CSRF', '1'], ['Content-Type', 'text/plain'], ['Content-Length', '500000']]);
    expect(response.status).toBe(401);
    expect(JSON.parse(response.body).error).toBe('login_required');
  });

  it('POST /auth/refresh without X-CSRF announcing a JSON body is refused with 403 before the body is sent', async () => {
    const instance = await bff();
    const port = await listening(instance);
    const response = await headOnly(port, '/auth/refresh', [['Content-Type', 'application/json'], ['Content-Length', '5000000']]);
    expect(response.status).toBe(403);
  });

  it('a POST to no route announcing a large JSON body is refused at once, its body unread', async () => {
    const instance = await bff();
    const port = await listening(instance);
    const response = await headOnly(port, '/nowhere', [['Content-Type', 'application/json'], ['Content-Length', '5000000']]);
    expect([404, 413]).toContain(response.status);
  });

  it('POST /auth/logout with a body over a few KiB is refused with 413', async () => {
    const { app } = await bff();
    const browser = new TestBrowser(app);
    await browser.login();
    const response = await browser.request('/auth/logout', { method: 'POST', payload: { padding: 'x'.repeat(20_000) } });
    expect(response.statusCode).toBe(413);
  });
});

describe('slow requests are cut off', () => {
  it('a request whose body never arrives is answered 408 and closed after limits.requestTimeoutMs', async () => {
    const instance = await bff({ limits: { requestTimeoutMs: 1500, headersTimeoutMs: 1000 } });
    const browser = new TestBrowser(instance.app);
    await browser.login();
    const port = await listening(instance);
    const started = Date.now();
    const response = await rawHttp(
      port,
      rawRequest('POST', '/api/upload', [['Cookie', browser.cookieHeader()], ['X-CSRF', '1'], ['Content-Type', 'text/plain'], ['Content-Length', '1000']], 'only a little'),
      10_000,
    );
    expect(Date.now() - started).toBeLessThan(6000);
    expect(response.status).toBe(408);
    expect(JSON.parse(response.body).error).toBe('request_timeout');
  });

  it('a request whose headers never end is answered 408 and closed after limits.headersTimeoutMs', async () => {
    const instance = await bff({ limits: { requestTimeoutMs: 5000, headersTimeoutMs: 1000 } });
    const port = await listening(instance);
    const started = Date.now();
    const response = await rawHttp(port, 'GET /api/x HTTP/1.1\r\nHost: app.example.test\r\nX-Slow: 1\r\n', 10_000);
    expect(Date.now() - started).toBeLessThan(4000);
    expect(response.status).toBe(408);
  });
});

describe('/metrics is not public by default', () => {
  it('by default the main listener does not serve /metrics (it is on metrics.port, 9090)', async () => {
    // Not listening: the separate metrics server would start only with the main listener.
    const { app, config } = await bff({ metrics: {} });
    expect(config.metrics).toEqual({ enabled: true, port: 9090, onMainListener: false });
    expect((await app.inject('/metrics')).statusCode).toBe(404);
  });

  it('metrics.onMainListener: true serves /metrics on the main listener', async () => {
    const { app } = await bff({ metrics: { onMainListener: true } });
    const response = await app.inject('/metrics');
    expect(response.statusCode).toBe(200);
    expect(response.body).toContain('token_handler_http_requests_total');
  });
});
