import { randomBytes } from 'node:crypto';
import { get } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { startProvider, type TestProvider } from './support/provider.js';
import { startUpstream, type Upstream } from './support/upstream.js';
import { freePort } from './support/ports.js';
import { startOtlpReceiver, type OtlpReceiver, type ReceivedSpan } from './support/otlp-receiver.js';
import { redisServerInstalled, startRedisServer, uniquePrefix, warnRedisSkipped, type RedisServer } from './support/redis.js';
import { REDIRECT_URI, SECRET, startBff, TestBrowser, type TestBff } from './support/bff.js';
import { activeTracing } from '../src/ops/tracing.js';

const hasRedis = redisServerInstalled();
if (!hasRedis) warnRedisSkipped('test/tracing.test.ts (the Redis span scenario)');

let provider: TestProvider;
let upstream: Upstream;
let receiver: OtlpReceiver;
const open: TestBff[] = [];

beforeAll(async () => {
  provider = await startProvider({ redirectUris: [REDIRECT_URI], rotateRefreshToken: true });
  upstream = await startUpstream({
    introspectionEndpoint: provider.endpoints.introspection,
    clientId: provider.clients.api.clientId,
    clientSecret: provider.clients.api.clientSecret,
  });
  receiver = await startOtlpReceiver();
});

/** The OTEL_* variables these tests set, cleared first so the machine's own environment cannot turn tracing on. */
const OTEL_VARIABLES = ['OTEL_SDK_DISABLED', 'OTEL_TRACES_EXPORTER', 'OTEL_EXPORTER_OTLP_ENDPOINT', 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT', 'OTEL_TRACES_SAMPLER'];

beforeEach(() => {
  for (const name of OTEL_VARIABLES) vi.stubEnv(name, undefined);
  receiver.spans.length = 0;
  receiver.bodies.length = 0;
  upstream.requests.length = 0;
});

afterEach(async () => {
  for (const bff of open.splice(0)) await bff.app.close();
  vi.unstubAllEnvs();
});

afterAll(async () => {
  await receiver.close();
  await upstream.close();
  await provider.stop();
});

/** token-handler with tracing configured as an operator would: the collector's base URL in OTEL_EXPORTER_OTLP_ENDPOINT. */
async function tracedBff(extra: Record<string, unknown> = {}, now?: () => number): Promise<TestBff> {
  vi.stubEnv('OTEL_EXPORTER_OTLP_ENDPOINT', receiver.url);
  return bffWith(extra, now);
}

async function bffWith(extra: Record<string, unknown> = {}, now?: () => number): Promise<TestBff> {
  const bff = await startBff(
    {
      oidc: { issuer: provider.issuer, clientId: provider.clients.basic.clientId, clientSecret: provider.clients.basic.clientSecret },
      session: { secrets: [SECRET] },
      routes: [{ prefix: '/api', upstream: upstream.url }],
      ...extra,
    },
    now ? { now } : {},
  );
  open.push(bff);
  return bff;
}

/** Closes token-handler, which exports the spans it still holds, and returns what the collector received. */
async function exportedBy(bff: TestBff): Promise<ReceivedSpan[]> {
  open.splice(open.indexOf(bff), 1);
  await bff.app.close();
  return receiver.spans;
}

function newTraceparent(): { traceId: string; parentId: string; header: string } {
  const traceId = randomBytes(16).toString('hex');
  const parentId = randomBytes(8).toString('hex');
  return { traceId, parentId, header: `00-${traceId}-${parentId}-01` };
}

function only(spans: ReceivedSpan[], predicate: (span: ReceivedSpan) => boolean, what: string): ReceivedSpan {
  const found = spans.filter(predicate);
  if (found.length !== 1) throw new Error(`expected one ${what}, found ${found.length} among: ${spans.map((s) => s.name).join(', ')}`);
  return found[0]!;
}

describe('tracing configured by OTEL_EXPORTER_OTLP_ENDPOINT', () => {
  it("continues the browser's trace: its traceparent is the server span's parent, and the upstream gets the upstream span's", async () => {
    const bff = await tracedBff();
    const browser = new TestBrowser(bff.app);
    await browser.login();
    const browserTrace = newTraceparent();
    const response = await browser.request('/api/orders?api_key=query-secret', { headers: { traceparent: browserTrace.header, tracestate: 'vendor=abc' } });
    expect(response.statusCode).toBe(200);
    const received = upstream.requests.at(-1)!;

    const spans = await exportedBy(bff);
    const server = only(spans, (s) => s.kind === 'server' && s.traceId === browserTrace.traceId, 'server span in the browser trace');
    expect(server).toMatchObject({
      name: 'GET /api/*',
      parentSpanId: browserTrace.parentId,
      attributes: { 'http.request.method': 'GET', 'http.route': '/api/*', 'url.path': '/api/orders', 'http.response.status_code': 200 },
      resource: { 'service.name': 'token-handler' },
    });
    const client = only(spans, (s) => s.kind === 'client' && s.parentSpanId === server.spanId && s.name.startsWith('GET 127.0.0.1'), 'upstream span');
    expect(client.traceId).toBe(browserTrace.traceId);
    expect(received.url).toBe('/orders?api_key=query-secret');
    expect(client.attributes).toMatchObject({ 'server.address': '127.0.0.1', 'server.port': upstream.port, 'http.response.status_code': 200, 'url.path': '/orders' });
    expect(received.headers.traceparent).toBe(`00-${browserTrace.traceId}-${client.spanId}-01`);
    expect(received.headers.tracestate).toBe('vendor=abc');
    // Query strings never reach a span: they may carry secrets.
    expect(receiver.bodies.join('\n')).not.toContain('query-secret');
  });

  it("starts a new trace for a malformed traceparent, and never passes the browser's on", async () => {
    const bff = await tracedBff();
    const browser = new TestBrowser(bff.app);
    await browser.login();
    await browser.request('/api/orders', { headers: { traceparent: '00-not-a-trace-01', tracestate: 'vendor=abc' } });
    const received = upstream.requests.at(-1)!;

    const spans = await exportedBy(bff);
    const server = only(spans, (s) => s.kind === 'server' && s.name === 'GET /api/*', 'proxied request span');
    expect(server.parentSpanId).toBeUndefined();
    const client = only(spans, (s) => s.kind === 'client' && s.parentSpanId === server.spanId, 'upstream span');
    expect(received.headers.traceparent).toBe(`00-${server.traceId}-${client.spanId}-01`);
    expect(received.headers.tracestate).toBeUndefined();
  });

  it("shows a refresh as an oidc refresh span inside the request's trace", async () => {
    const time = { now: Date.now() };
    const bff = await tracedBff({}, () => time.now);
    const browser = new TestBrowser(bff.app);
    await browser.login();
    time.now += 120_000;
    const browserTrace = newTraceparent();
    expect((await browser.request('/api/orders', { headers: { traceparent: browserTrace.header } })).statusCode).toBe(200);

    const spans = await exportedBy(bff);
    const server = only(spans, (s) => s.kind === 'server' && s.traceId === browserTrace.traceId, 'server span in the browser trace');
    const refresh = only(spans, (s) => s.name === 'oidc refresh', 'refresh span');
    expect(refresh).toMatchObject({ traceId: browserTrace.traceId, parentSpanId: server.spanId, kind: 'client', status: { code: 'unset' } });
    expect(refresh.attributes).toMatchObject({ 'server.address': '127.0.0.1', 'oidc.operation': 'refresh' });
  });

  it('shows discovery, the code exchange and the JWKS fetch of a login', async () => {
    const bff = await tracedBff();
    const browser = new TestBrowser(bff.app);
    const callback = await browser.login();
    expect(callback.statusCode).toBe(302);

    const spans = await exportedBy(bff);
    expect(only(spans, (s) => s.name === 'oidc discovery', 'discovery span').parentSpanId).toBeUndefined();
    const callbackSpan = only(spans, (s) => s.name === 'GET /auth/callback', 'callback span');
    const exchange = only(spans, (s) => s.name === 'oidc code exchange', 'code exchange span');
    expect(exchange.parentSpanId).toBe(callbackSpan.spanId);
    const jwks = only(spans, (s) => s.name === 'oidc jwks fetch', 'JWKS fetch span');
    expect(jwks).toMatchObject({ traceId: callbackSpan.traceId, parentSpanId: exchange.spanId, attributes: { 'http.response.status_code': 200 } });
  });

  it('records no token, cookie or Authorization value in any span, through login, refresh, client credentials and logout', async () => {
    const time = { now: Date.now() };
    const bff = await tracedBff(
      {
        routes: [
          { prefix: '/api', upstream: upstream.url },
          { prefix: '/reports', upstream: upstream.url, token: 'client', clientScopes: ['reports'] },
        ],
      },
      () => time.now,
    );
    const browser = new TestBrowser(bff.app);
    await browser.login();
    expect((await browser.request('/api/orders')).statusCode).toBe(200);
    time.now += 120_000;
    expect((await browser.request('/api/orders')).statusCode).toBe(200);
    expect((await browser.request('/reports/daily')).statusCode).toBe(200);
    const cookieValues = [...browser.cookies.values()];
    expect((await browser.request('/auth/logout', { method: 'POST' })).statusCode).toBe(200);

    const spans = await exportedBy(bff);
    // The scan below covers every kind of provider call, and the upstream calls that carried a token.
    for (const name of ['oidc code exchange', 'oidc refresh', 'oidc client credentials', 'oidc revocation']) {
      expect(spans.map((s) => s.name)).toContain(name);
    }
    expect(spans.filter((s) => s.kind === 'client' && s.attributes['server.port'] === upstream.port)).toHaveLength(3);
    const exported = receiver.bodies.join('\n');
    const secrets = [...provider.issuedTokens(), ...cookieValues, provider.clients.basic.clientSecret].filter((s) => s.length >= 16);
    expect(secrets.length).toBeGreaterThan(5);
    for (const secret of secrets) expect(exported.includes(secret), `a span holds ${secret.slice(0, 8)}…`).toBe(false);
    expect(exported).not.toMatch(/bearer|authorization|cookie/i);
  });

  it('ends the upstream span, marked failed, when the browser leaves before the upstream answers', async () => {
    const bff = await tracedBff();
    const browser = new TestBrowser(bff.app);
    await browser.login();
    await bff.app.listen({ port: 0, host: '127.0.0.1' });
    const { port } = bff.app.server.address() as AddressInfo;
    await new Promise<void>((resolve) => {
      const request = get({ host: '127.0.0.1', port, path: '/api/slow?ms=1500', agent: false, headers: { cookie: browser.cookieHeader(), 'x-csrf': '1' } });
      request.on('error', () => undefined);
      request.on('close', () => resolve());
      setTimeout(() => request.destroy(), 200);
    });
    await expect.poll(() => upstream.requests.some((r) => r.url.startsWith('/slow'))).toBe(true);

    const spans = await exportedBy(bff);
    const server = only(spans, (s) => s.name === 'GET /api/*', 'proxied request span');
    expect(server.attributes['token_handler.cut_off']).toBe(true);
    const client = only(spans, (s) => s.kind === 'client' && s.parentSpanId === server.spanId, 'upstream span');
    expect(client.status.code).toBe('error');
    expect(client.attributes['error.type']).toBe('browser_left');
  });

  it('makes no span for health probes and metrics scrapes', async () => {
    const bff = await tracedBff();
    for (const path of ['/healthz', '/readyz', '/metrics']) expect((await bff.app.inject(path)).statusCode).toBe(200);
    expect((await bff.app.inject('/nowhere')).statusCode).toBe(404);

    const names = (await exportedBy(bff)).map((s) => s.name);
    expect(names).toContain('GET');
    expect(names.filter((name) => /healthz|readyz|metrics/.test(name))).toEqual([]);
  });

  it('keeps serving when the collector is unreachable, and says so in a warning', async () => {
    vi.stubEnv('OTEL_EXPORTER_OTLP_TIMEOUT', '500');
    vi.stubEnv('OTEL_EXPORTER_OTLP_ENDPOINT', `http://127.0.0.1:${await freePort()}`);
    const bff = await bffWith();
    const browser = new TestBrowser(bff.app);
    await browser.login();
    expect((await browser.request('/api/orders')).statusCode).toBe(200);
    await exportedBy(bff);
    const warnings = bff.logs.filter((line) => line.level === 40 && String(line.msg).startsWith('tracing:'));
    expect(warnings.length).toBeGreaterThan(0);
  });

  it('follows OTEL_TRACES_SAMPLER: a trace sampled out exports nothing, and the upstream still gets a traceparent marked not sampled', async () => {
    vi.stubEnv('OTEL_TRACES_SAMPLER', 'always_off');
    const bff = await tracedBff();
    const browser = new TestBrowser(bff.app);
    await browser.login();
    const browserTrace = newTraceparent();
    await browser.request('/api/orders', { headers: { traceparent: browserTrace.header } });
    const sent = String(upstream.requests.at(-1)!.headers.traceparent);
    expect(sent).toMatch(new RegExp(`^00-${browserTrace.traceId}-[0-9a-f]{16}-00$`));
    expect(sent).not.toBe(browserTrace.header);
    expect(await exportedBy(bff)).toEqual([]);
  });

  it.runIf(hasRedis)("shows the Redis session store's calls inside the request's trace", async () => {
    let redis: RedisServer | undefined;
    try {
      redis = await startRedisServer();
      const bff = await tracedBff({ session: { store: 'redis', secrets: [SECRET], redis: { url: redis.url, keyPrefix: uniquePrefix(), localCacheEntries: 0 } } });
      const browser = new TestBrowser(bff.app);
      await browser.login();
      const browserTrace = newTraceparent();
      expect((await browser.request('/api/orders', { headers: { traceparent: browserTrace.header } })).statusCode).toBe(200);

      const spans = await exportedBy(bff);
      const server = only(spans, (s) => s.kind === 'server' && s.traceId === browserTrace.traceId, 'server span in the browser trace');
      const read = only(spans, (s) => s.name === 'redis get' && s.traceId === browserTrace.traceId, 'session read span');
      expect(read).toMatchObject({ parentSpanId: server.spanId, kind: 'client', attributes: { 'db.system.name': 'redis', 'db.operation.name': 'get' } });
      expect(spans.map((s) => s.name)).toContain('redis create');
    } finally {
      await redis?.stop();
    }
  });
});

describe('tracing not configured', () => {
  it("starts no SDK and exports nothing, and the browser's traceparent reaches the upstream as it was sent", async () => {
    const bff = await bffWith();
    expect(activeTracing()).toBeUndefined();
    const browser = new TestBrowser(bff.app);
    await browser.login();
    const browserTrace = newTraceparent();
    await browser.request('/api/orders', { headers: { traceparent: browserTrace.header, tracestate: 'vendor=abc' } });
    expect(upstream.requests.at(-1)!.headers).toMatchObject({ traceparent: browserTrace.header, tracestate: 'vendor=abc' });
    expect(await exportedBy(bff)).toEqual([]);
    expect(bff.logs.some((line) => String(line.msg).startsWith('tracing'))).toBe(false);
  });

  it('OTEL_SDK_DISABLED=true turns it off even with an endpoint configured', async () => {
    vi.stubEnv('OTEL_SDK_DISABLED', 'true');
    const bff = await tracedBff();
    expect(activeTracing()).toBeUndefined();
    const browser = new TestBrowser(bff.app);
    await browser.login();
    const malformed = '00-not-a-trace-01';
    await browser.request('/api/orders', { headers: { traceparent: malformed } });
    expect(upstream.requests.at(-1)!.headers.traceparent).toBe(malformed);
    expect(await exportedBy(bff)).toEqual([]);
    expect(receiver.bodies).toEqual([]);
  });
});
