import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startProvider, type TestProvider } from './support/provider.js';
import { startIntrospectingUpstream, type Upstream } from './support/upstream.js';
import { freePort } from './support/ports.js';
import { REDIRECT_URI, SECRET, startBff, TestBrowser, type TestBff } from './support/bff.js';

let provider: TestProvider;
let upstream: Upstream;
const started: TestBff[] = [];

beforeAll(async () => {
  provider = await startProvider({ redirectUris: [REDIRECT_URI] });
  upstream = await startIntrospectingUpstream(provider);
});

afterAll(async () => {
  for (const bff of started) await bff.app.close();
  await upstream.close();
  await provider.stop();
});

async function bff(extra: Record<string, unknown> = {}, now?: () => number): Promise<TestBff> {
  const instance = await startBff(
    {
      oidc: { issuer: provider.issuer, clientId: provider.clients.basic.clientId, clientSecret: provider.clients.basic.clientSecret },
      session: { secrets: [SECRET] },
      routes: [{ prefix: '/api', upstream: upstream.url, responseTimeoutMs: 500 }],
      ...extra,
    },
    now ? { now } : {},
  );
  started.push(instance);
  return instance;
}

/** The value of one sample in a Prometheus text exposition, or undefined. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  const wanted = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const rest = line.slice(name.length);
    if (rest[0] !== '{' && rest[0] !== ' ') continue;
    if (wanted.every((w) => rest.includes(w))) return Number(line.split(' ').pop());
  }
  return undefined;
}

describe('metrics', () => {
  it('count logins, proxied calls, refreshes, joins and an invalid_grant logout', async () => {
    const time = { now: Date.now() };
    const instance = await bff({ session: { secrets: [SECRET], store: 'memory' } }, () => time.now);
    const browser = new TestBrowser(instance.app);
    await browser.login({ login: 'metrics-user' });
    for (let i = 0; i < 3; i++) await browser.request('/api/x');
    time.now += 120_000;
    await Promise.all([browser.request('/api/a'), browser.request('/api/b'), browser.request('/api/c')]);
    await provider.revokeGrantsOf('metrics-user');
    time.now += 120_000;
    expect((await browser.request('/api/x')).statusCode).toBe(401);

    const response = await instance.app.inject('/metrics');
    expect(response.statusCode).toBe(200);
    expect(response.headers['content-type']).toMatch(/^text\/plain/);
    const text = response.body;
    expect(sample(text, 'token_handler_logins_total', { outcome: 'success' })).toBe(1);
    expect(sample(text, 'token_handler_http_requests_total', { group: 'api:/api', status: '200' })).toBe(6);
    expect(sample(text, 'token_handler_http_requests_total', { group: 'api:/api', status: '401' })).toBe(1);
    expect(sample(text, 'token_handler_http_requests_total', { group: 'auth', status: '302' })).toBe(2);
    expect(sample(text, 'token_handler_refresh_attempts_total', { outcome: 'success' })).toBe(1);
    expect(sample(text, 'token_handler_refresh_attempts_total', { outcome: 'invalid_grant' })).toBe(1);
    expect(sample(text, 'token_handler_refresh_joins_total')).toBe(2);
    expect(sample(text, 'token_handler_refresh_duration_seconds_count')).toBe(2);
    expect(sample(text, 'token_handler_proxy_duration_seconds_count', { route: '/api' })).toBe(7);
    expect(sample(text, 'token_handler_logouts_total', { reason: 'invalid_grant' })).toBe(1);
    expect(sample(text, 'token_handler_active_sessions')).toBe(0);
    expect(sample(text, 'token_handler_process_resident_memory_bytes')).toBeGreaterThan(0);
  });

  it('are served only on metrics.port when it is set', async () => {
    const port = await freePort();
    const instance = await bff({ metrics: { port } });
    await instance.app.listen({ host: '127.0.0.1', port: 0 });
    const address = instance.app.server.address();
    const mainPort = typeof address === 'object' && address ? address.port : 0;
    expect((await fetch(`http://127.0.0.1:${mainPort}/metrics`)).status).toBe(404);
    const separate = await fetch(`http://127.0.0.1:${port}/metrics`);
    expect(separate.status).toBe(200);
    expect(await separate.text()).toContain('token_handler_http_requests_total');
  });
});

describe('request logs', () => {
  it('write one line per request with a request id and a session hash, never a token or the sub', async () => {
    const instance = await bff();
    const browser = new TestBrowser(instance.app);
    await browser.login({ login: 'log-user' });
    const response = await browser.request('/api/logged', { headers: { 'x-request-id': 'trace-123' } });
    expect(response.headers['x-request-id']).toBe('trace-123');
    const lines = instance.logs.filter((l) => l.msg === 'request' && l.url === '/api/logged');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ reqId: 'trace-123', status: 200, group: 'api:/api', session: expect.stringMatching(/^[\w-]{12}$/) });
    expect(lines[0]!.sub).toBeUndefined();
    expect(instance.logText()).not.toContain('log-user');
  });

  it('log the sub only with logging.includeSubject', async () => {
    const instance = await bff({ logging: { includeSubject: true } });
    const browser = new TestBrowser(instance.app);
    await browser.login({ login: 'visible-user' });
    await browser.request('/api/x');
    expect(instance.logs.find((l) => l.msg === 'request' && l.url === '/api/x')?.sub).toBe('visible-user');
  });

  it('never log the authorization code of the callback', async () => {
    const instance = await bff();
    const browser = new TestBrowser(instance.app);
    await browser.login();
    const callback = instance.logs.find((l) => l.msg === 'request' && String(l.url).startsWith('/auth/callback'));
    expect(callback?.url).toBe('/auth/callback?[redacted]');
    expect(instance.logText()).not.toMatch(/code=/);
  });

  it('propagate the request id to the upstream, replacing a hostile one', async () => {
    const instance = await bff();
    const browser = new TestBrowser(instance.app);
    await browser.login();
    await browser.request('/api/with-id', { headers: { 'x-request-id': 'abc-42' } });
    expect(upstream.requests.at(-1)!.headers['x-request-id']).toBe('abc-42');
    const hostile = await browser.request('/api/with-id', { headers: { 'x-request-id': 'a b\tinjected"' } });
    expect(hostile.headers['x-request-id']).toMatch(/^[0-9a-f]{18}-\d+$/);
    expect(upstream.requests.at(-1)!.headers['x-request-id']).toBe(hostile.headers['x-request-id']);
  });
});

describe('limits', () => {
  it('refuse a body over limits.bodyLimitBytes with 413 payload_too_large', async () => {
    const instance = await bff({ limits: { bodyLimitBytes: 2048 } });
    const browser = new TestBrowser(instance.app);
    await browser.login();
    const before = upstream.requests.length;
    const response = await browser.request('/api/upload', { method: 'POST', payload: Buffer.alloc(4096), headers: { 'content-type': 'application/octet-stream' } });
    expect(response.statusCode).toBe(413);
    expect(response.json().error).toBe('payload_too_large');
    expect(upstream.requests.length).toBe(before);
  });

  it('refuse headers over limits.headerLimitBytes with 431 JSON', async () => {
    const instance = await bff({ limits: { headerLimitBytes: 2048 } });
    await instance.app.listen({ host: '127.0.0.1', port: 0 });
    const address = instance.app.server.address();
    const port = typeof address === 'object' && address ? address.port : 0;
    const raw = await new Promise<string>((resolve, reject) => {
      const socket = connect(port, '127.0.0.1', () => {
        socket.write(`GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(4096)}\r\n\r\n`);
      });
      let data = '';
      socket.on('data', (chunk) => (data += chunk.toString()));
      socket.on('end', () => resolve(data));
      socket.on('error', reject);
    });
    expect(raw).toMatch(/^HTTP\/1\.1 431/);
    expect(raw).toContain('"error":"headers_too_large"');
    expect((await fetch(`http://127.0.0.1:${port}/healthz`)).status).toBe(200);
  });

  it('answer 504 upstream_timeout when the upstream is slower than responseTimeoutMs, and keep the session', async () => {
    const instance = await bff();
    const browser = new TestBrowser(instance.app);
    await browser.login();
    const response = await browser.request('/api/slow?ms=1500');
    expect(response.statusCode).toBe(504);
    expect(response.json().error).toBe('upstream_timeout');
    expect((await browser.request('/api/fast')).statusCode).toBe(200);
  });
});

describe('readiness and graceful shutdown', () => {
  it('turns /readyz not ready once shutdown begins', async () => {
    const instance = await bff();
    expect((await instance.app.inject('/readyz')).statusCode).toBe(200);
    instance.app.beginShutdown();
    const response = await instance.app.inject('/readyz');
    expect(response.statusCode).toBe(503);
    expect(response.json().checks.shutdown).toBe('failing');
  });

  it('lets an in-flight request finish on SIGTERM, refuses new work, and exits 0', async () => {
    const port = await freePort();
    const dir = mkdtempSync(join(tmpdir(), 'th-shutdown-'));
    const file = join(dir, 'th.yaml');
    writeFileSync(
      file,
      [
        'publicUrl: https://app.example.com',
        `listen: { host: 127.0.0.1, port: ${port} }`,
        `oidc: { issuer: "${provider.issuer}", clientId: "${provider.clients.basic.clientId}", clientSecret: "${provider.clients.basic.clientSecret}" }`,
        `session: { secrets: ["${SECRET}"] }`,
        'shutdown: { gracePeriodSeconds: 10 }',
        'metrics: { port: 0 }',
        'routes:',
        `  - { prefix: /public-api, upstream: "${upstream.url}/public", token: none, anonymous: true }`,
      ].join('\n'),
    );
    const child = spawn(process.execPath, [new URL('../dist/main.js', import.meta.url).pathname, '--config', file], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (c: Buffer) => (output += c.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    await expect.poll(async () => (await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => undefined))?.status, { timeout: 10_000 }).toBe(200);

    const slow = new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = httpRequest({ host: '127.0.0.1', port, path: '/public-api/slow?ms=1500', headers: { 'x-csrf': '1' } }, (res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
      req.on('error', reject);
      req.end();
    });
    await expect.poll(() => upstream.requests.some((r) => r.url.startsWith('/public/slow')), { timeout: 5000, interval: 20 }).toBe(true);
    child.kill('SIGTERM');
    await expect.poll(() => output.includes('shutting down'), { timeout: 5000, interval: 20 }).toBe(true);
    const refused = await fetch(`http://127.0.0.1:${port}/readyz`).then((r) => r.status, () => 'refused');
    expect([503, 'refused']).toContain(refused);

    const finished = await slow;
    expect(finished.status).toBe(200);
    const finishedAt = Date.now();
    expect(await exited).toBe(0);
    // Idle keep-alive connections do not hold the exit until their timeout.
    expect(Date.now() - finishedAt).toBeLessThan(2000);
  });
});
