/**
 * Upstream faults (issue 9): the API behind a route is down, crashes mid-response, is slow, or
 * sends a huge response. The browser gets a JSON 502/504 (never a 500 with a stack), or — once
 * the upstream's status line has been passed on — a cut-off response; token-handler stays up,
 * and the same session keeps working. Huge responses stream through with flat memory.
 *
 * The faults come from the real test upstream (test/support/upstream.ts: `/hang-up`, `/reset`,
 * `/stall`, `/slow`, `/bytes`, all behind its token check) or from a port nothing listens on.
 * Where the browser side must see the bytes as they arrive, the test talks to token-handler
 * over a real socket (`app.listen` + `http.get`) instead of `inject`.
 */
import { get, type ClientRequest, type IncomingHttpHeaders, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LightMyRequestResponse } from 'fastify';
import { startProvider, type TestProvider } from './support/provider.js';
import { startUpstream, type EchoBody, type Upstream } from './support/upstream.js';
import { freePort } from './support/ports.js';
import { REDIRECT_URI, SECRET, startBff, TestBrowser, type TestBff } from './support/bff.js';

const SESSION = '__Host-th_session';
const MB = 1024 * 1024;

let provider: TestProvider;
let upstream: Upstream;
let deadPort: number;
const started: TestBff[] = [];

beforeAll(async () => {
  provider = await startProvider({ redirectUris: [REDIRECT_URI] });
  upstream = await startUpstream({
    introspectionEndpoint: `${provider.issuer}/token/introspection`,
    clientId: provider.clients.api.clientId,
    clientSecret: provider.clients.api.clientSecret,
  });
  deadPort = await freePort();
});

afterAll(async () => {
  for (const bff of started) await bff.app.close();
  await upstream.close();
  await provider.stop();
});

/**
 * token-handler with a healthy route, a route to a dead port, two routes with a 500 ms
 * response timeout (one with the default buffering of small responses, one streaming every
 * response), and a route that reads only responses up to 2 KiB whole.
 */
async function bff(): Promise<TestBff> {
  const instance = await startBff({
    oidc: { issuer: provider.issuer, clientId: provider.clients.basic.clientId, clientSecret: provider.clients.basic.clientSecret },
    session: { secrets: [SECRET] },
    routes: [
      { prefix: '/api', upstream: upstream.url },
      { prefix: '/refused', upstream: `http://127.0.0.1:${deadPort}`, connectTimeoutMs: 1000 },
      { prefix: '/impatient', upstream: upstream.url, responseTimeoutMs: 500 },
      { prefix: '/impatient-streaming', upstream: upstream.url, responseTimeoutMs: 500, bufferResponseBytes: 0 },
      { prefix: '/small-buffer', upstream: upstream.url, bufferResponseBytes: 2048 },
    ],
  });
  started.push(instance);
  return instance;
}

async function signedIn(): Promise<{ instance: TestBff; browser: TestBrowser }> {
  const instance = await bff();
  const browser = new TestBrowser(instance.app);
  await browser.login();
  return { instance, browser };
}

/** A browser-facing error: JSON `{error, error_description}` only, no stack trace. */
function expectJsonError(response: LightMyRequestResponse, status: number, error: string): void {
  expect(response.statusCode).toBe(status);
  expect(response.headers['content-type']).toMatch(/^application\/json/);
  const body = response.json();
  expect(Object.keys(body).sort()).toEqual(['error', 'error_description']);
  expect(body.error).toBe(error);
  expect(response.body).not.toMatch(/\bat .+:\d+:\d+|node:internal|Error:/);
}

/** The same session still works: an API call through the healthy route reaches the upstream with a valid token. */
async function expectSessionWorks(browser: TestBrowser): Promise<void> {
  const cookie = browser.cookies.get(SESSION);
  expect(cookie).toBeDefined();
  const response = await browser.request('/api/still-here');
  expect(response.statusCode).toBe(200);
  expect(response.json<EchoBody>().sub).toBe('alice');
  expect(upstream.requests.at(-1)?.tokenActive).toBe(true);
  expect(browser.cookies.get(SESSION)).toBeDefined();
}

interface RawResponse {
  status: number;
  headers: IncomingHttpHeaders;
  bytes: number;
  body: Buffer;
  /** The whole body arrived (as many bytes as announced, then a clean end). */
  complete: boolean;
  error?: string;
  ms: number;
}

/** The port token-handler listens on, listening on a free one first if it is not yet. */
async function listeningPort(instance: TestBff): Promise<number> {
  const address = instance.app.server.address() as AddressInfo | null;
  return address?.port ?? (await instance.app.listen({ port: 0, host: '127.0.0.1' }), (instance.app.server.address() as AddressInfo).port);
}

/** A GET over a real socket (no keep-alive) with the browser's cookies and the CSRF header. */
function browserGet(port: number, browser: TestBrowser, path: string, onResponse: (res: IncomingMessage) => void): ClientRequest {
  return get({ host: '127.0.0.1', port, path, agent: false, headers: { cookie: browser.cookieHeader(), 'x-csrf': '1' } }, onResponse);
}

/** The browser asks for `path`, then gives up after `ms` (closes its connection); resolves once it has. */
function browserGivesUp(port: number, browser: TestBrowser, path: string, ms: number): Promise<void> {
  return new Promise<void>((resolve) => {
    const request = browserGet(port, browser, path, () => undefined);
    request.on('error', () => undefined);
    request.on('close', () => resolve());
    setTimeout(() => request.destroy(), ms);
  });
}

/**
 * GET over a real socket as the browser's session, reading the body chunk by chunk. The
 * response (headers and, when kept, body) is recorded in `browser` for the leak guard.
 */
async function socketGet(
  instance: TestBff,
  browser: TestBrowser,
  path: string,
  options: { keepBody?: boolean; onChunk?: (received: number, pause: (ms: number) => void) => void } = {},
): Promise<RawResponse> {
  const port = await listeningPort(instance);
  const startedAt = Date.now();
  const result = await new Promise<RawResponse>((resolve) => {
    const chunks: Buffer[] = [];
    const out: RawResponse = { status: 0, headers: {}, bytes: 0, body: Buffer.alloc(0), complete: false, ms: 0 };
    const finish = () => {
      out.ms = Date.now() - startedAt;
      out.body = Buffer.concat(chunks);
      resolve(out);
    };
    const request = browserGet(port, browser, path, (res) => {
      out.status = res.statusCode ?? 0;
      out.headers = res.headers;
      const pause = (ms: number) => {
        res.pause();
        setTimeout(() => res.resume(), ms);
      };
      res.on('data', (chunk: Buffer) => {
        out.bytes += chunk.length;
        if (options.keepBody) chunks.push(chunk);
        options.onChunk?.(out.bytes, pause);
      });
      res.on('end', () => {
        out.complete = res.complete;
      });
      res.on('error', (err) => {
        out.error = err.message;
      });
      res.on('close', finish);
    });
    request.on('error', (err) => {
      out.error ??= err.message;
      if (out.status === 0) finish();
    });
  });
  browser.responses.push({ headers: result.headers, body: result.body.toString('utf8') } as unknown as LightMyRequestResponse);
  return result;
}

describe('upstream down', () => {
  it('answers 502 upstream_unavailable JSON when the upstream refuses connections, and the session keeps working', async () => {
    const { instance, browser } = await signedIn();
    const startedAt = Date.now();
    const response = await browser.request('/refused/orders');
    expect(Date.now() - startedAt).toBeLessThan(2_000);
    expectJsonError(response, 502, 'upstream_unavailable');
    // The warning is bound to the request (its request id, as echoed to the browser).
    expect(instance.logs.filter((l) => l.level === 40 && l.msg === 'upstream request failed').map((l) => l.reqId)).toEqual([response.headers['x-request-id']]);
    expect(instance.logs.some((l) => l.msg === 'unhandled error')).toBe(false);
    await expectSessionWorks(browser);
  });

  it('answers 502 upstream_unavailable JSON when the upstream closes the connection without answering, and the session keeps working', async () => {
    const { instance, browser } = await signedIn();
    const response = await browser.request('/api/hang-up');
    expectJsonError(response, 502, 'upstream_unavailable');
    expect(instance.logs.some((l) => l.msg === 'unhandled error')).toBe(false);
    await expectSessionWorks(browser);
  });
});

describe('upstream fails mid-response', () => {
  it('cuts the response off (or answers 502) when the upstream resets the connection halfway through the body, stays up, and the session keeps working', async () => {
    const { instance, browser } = await signedIn();
    const response = await socketGet(instance, browser, '/api/reset?bytes=65536', { keepBody: true });
    if (response.status === 502) {
      // token-handler noticed before passing anything on: a clean JSON error.
      expect(response.headers['content-type']).toMatch(/^application\/json/);
      expect(JSON.parse(response.body.toString()).error).toBe('upstream_unavailable');
    } else {
      // The status line was already passed on: the browser must see that the body is incomplete
      // (never a "complete" response with half the bytes), and never a 500.
      expect(response.status).toBe(200);
      expect(response.complete).toBe(false);
      expect(response.bytes).toBeLessThan(2 * 65536);
      expect(response.body.toString()).not.toMatch(/\bat .+:\d+:\d+|node:internal/);
    }
    expect(response.status).not.toBe(500);
    expect((await instance.app.inject('/healthz')).statusCode).toBe(200);
    expect(instance.logs.some((l) => l.msg === 'unhandled error')).toBe(false);
    await expectSessionWorks(browser);
  });

  it('leaves a trace for the operator when the upstream resets mid-response: the request line and a warning', async () => {
    const { instance, browser } = await signedIn();
    const response = await socketGet(instance, browser, '/api/reset?bytes=65536');
    expect(response.complete).toBe(false);
    // README "Logs": one line per request (msg "request"), whatever its outcome; and the upstream
    // failure is logged at warn level, as it is when the upstream cannot be reached at all.
    await expect
      .poll(() => instance.logs.some((l) => l.msg === 'request' && l.url === '/api/reset?bytes=65536'), { timeout: 1_000 })
      .toBe(true);
    expect(instance.logs.filter((l) => l.msg === 'request' && l.url === '/api/reset?bytes=65536')).toMatchObject([{ cutOff: true, status: 200 }]);
    expect(instance.logs.some((l) => l.level === 40 && /upstream|terminated|closed/i.test(String(l.msg)))).toBe(true);
    const metrics = (await instance.app.inject('/metrics')).body;
    expect(metrics).toMatch(/token_handler_http_requests_total\{group="api:\/api",status="cut_off",app="default"\} 1/);
  });

  it('logs a response the browser walked away from mid-stream once, marked cutOff, at info level (not an upstream fault)', async () => {
    const { instance, browser } = await signedIn();
    // The upstream announces 128 KB (more than bufferResponseBytes, so it streams), sends 64 KB,
    // then nothing for 3 s: the browser leaves after the first bytes.
    const port = await listeningPort(instance);
    await new Promise<void>((resolve) => {
      const request = browserGet(port, browser, '/api/stall?bytes=65536&ms=3000', (res) => {
        res.once('data', () => request.destroy());
        res.on('error', () => undefined);
        res.on('close', () => resolve());
      });
      request.on('error', () => undefined);
    });
    await expect
      .poll(() => instance.logs.filter((l) => l.msg === 'request' && l.url === '/api/stall?bytes=65536&ms=3000').length, { timeout: 4_000 })
      .toBe(1);
    expect(instance.logs.find((l) => l.msg === 'request' && l.url === '/api/stall?bytes=65536&ms=3000')).toMatchObject({ cutOff: true });
    expect(instance.logs.some((l) => l.level === 30 && /browser went away/.test(String(l.msg)))).toBe(true);
    expect(instance.logsAfterStart.some((l) => Number(l.level) >= 40)).toBe(false);
  });
});

describe('upstream too slow', () => {
  it("answers 504 upstream_timeout JSON when the upstream does not answer within the route's responseTimeoutMs, and the session keeps working", async () => {
    const { browser } = await signedIn();
    const startedAt = Date.now();
    const response = await browser.request('/impatient/slow?ms=5000');
    const elapsed = Date.now() - startedAt;
    expectJsonError(response, 504, 'upstream_timeout');
    expect(elapsed).toBeGreaterThanOrEqual(400);
    expect(elapsed).toBeLessThan(3_000);
    await expectSessionWorks(browser);
  });

  it("cuts a streamed response off when the upstream's body stalls longer than responseTimeoutMs after its headers, and the session keeps working", async () => {
    const { instance, browser } = await signedIn();
    const response = await socketGet(instance, browser, '/impatient-streaming/stall?bytes=1024&ms=5000', { keepBody: true });
    // Headers and the first KB were passed on in time; then nothing for longer than the timeout.
    expect(response.status).toBe(200);
    expect(response.complete).toBe(false);
    expect(response.bytes).toBe(1024);
    expect(response.ms).toBeLessThan(3_000);
    expect((await instance.app.inject('/healthz')).statusCode).toBe(200);
    await expectSessionWorks(browser);
  });
});

describe('small upstream responses (Content-Length up to routes[].bufferResponseBytes) are read whole before they are passed on', () => {
  it("reach the browser intact, with the upstream's Content-Length and every byte", async () => {
    const { instance, browser } = await signedIn();
    const response = await socketGet(instance, browser, '/api/bytes?n=50000', { keepBody: true });
    expect(response.status).toBe(200);
    expect(response.headers['content-length']).toBe('50000');
    expect(response.headers['transfer-encoding']).toBeUndefined();
    expect(response.complete).toBe(true);
    expect(response.body.equals(Buffer.alloc(50000, 'a'))).toBe(true);
  });

  it('reach the browser whole when the upstream sends them in parts with a pause between', async () => {
    const { instance, browser } = await signedIn();
    const response = await socketGet(instance, browser, '/api/stall?bytes=512&ms=150', { keepBody: true });
    expect(response.status).toBe(200);
    expect(response.headers['content-length']).toBe('1024');
    expect(response.complete).toBe(true);
    expect(response.body.equals(Buffer.alloc(1024, 'p'))).toBe(true);
  });

  it('answer 502 upstream_unavailable JSON instead of half a body when the upstream resets halfway through, and the session keeps working', async () => {
    const { instance, browser } = await signedIn();
    const response = await browser.request('/api/reset?bytes=1024');
    expectJsonError(response, 502, 'upstream_unavailable');
    expect(response.headers['content-length']).toBe(String(Buffer.byteLength(response.body)));
    expect(instance.logs.filter((l) => l.level === 40 && l.msg === 'upstream request failed').map((l) => l.reqId)).toEqual([response.headers['x-request-id']]);
    expect(instance.logs.filter((l) => l.msg === 'request' && l.url === '/api/reset?bytes=1024')).toMatchObject([{ status: 502 }]);
    await expectSessionWorks(browser);
  });

  it("answer 504 upstream_timeout JSON instead of half a body when the upstream's body stalls longer than responseTimeoutMs", async () => {
    const { browser } = await signedIn();
    const startedAt = Date.now();
    const response = await browser.request('/impatient/stall?bytes=1024&ms=5000');
    expectJsonError(response, 504, 'upstream_timeout');
    expect(Date.now() - startedAt).toBeLessThan(3_000);
    await expectSessionWorks(browser);
  });

  it('leave one request line, marked cutOff, no warning, and free the upstream at once when the browser leaves before the response is complete', async () => {
    const { instance, browser } = await signedIn();
    const port = await listeningPort(instance);
    // The upstream sends 1 KB of 2 KB, then nothing for 3 s; the browser gives up after 200 ms.
    const startedAt = Date.now();
    await browserGivesUp(port, browser, '/api/stall?bytes=1024&ms=3000', 200);
    const line = () => instance.logs.filter((l) => l.msg === 'request' && l.url === '/api/stall?bytes=1024&ms=3000');
    await expect.poll(() => line().length, { timeout: 2_000 }).toBe(1);
    // Written when the browser left, not when the upstream would have finished (3 s).
    expect(Date.now() - startedAt).toBeLessThan(2_000);
    expect(line()[0]).toMatchObject({ cutOff: true, status: 200 });
    expect(instance.logs.filter((l) => l.msg === 'response not sent: the browser went away')).toHaveLength(1);
    expect(instance.logsAfterStart.some((l) => Number(l.level) >= 40)).toBe(false);
    await expectSessionWorks(browser);
  });

  it('leave one request line, marked cutOff, when the browser leaves before the upstream has answered', async () => {
    const { instance, browser } = await signedIn();
    const port = await listeningPort(instance);
    // The upstream answers after 600 ms; the browser gives up after 100 ms.
    await browserGivesUp(port, browser, '/api/slow?ms=600', 100);
    const line = () => instance.logs.filter((l) => l.msg === 'request' && l.url === '/api/slow?ms=600');
    await expect.poll(() => line().length, { timeout: 3_000 }).toBe(1);
    expect(line()[0]).toMatchObject({ cutOff: true });
    expect(instance.logs.filter((l) => l.msg === 'response not sent: the browser went away')).toHaveLength(1);
    expect(instance.logsAfterStart.some((l) => Number(l.level) >= 40)).toBe(false);
    await expectSessionWorks(browser);
  });

  it('read a response of exactly bufferResponseBytes whole, and stream one a byte longer', async () => {
    const { instance, browser } = await signedIn();
    // Content-Length 2048 (the route's limit): read whole, so its failure is a clean 502.
    expectJsonError(await browser.request('/small-buffer/reset?bytes=1024'), 502, 'upstream_unavailable');
    // Content-Length 2050: streamed, so the status line was passed on before the failure.
    const streamed = await socketGet(instance, browser, '/small-buffer/reset?bytes=1025');
    expect(streamed.status).toBe(200);
    expect(streamed.complete).toBe(false);
  });

  it('stream a small response that has no Content-Type, so none is added', async () => {
    const { instance, browser } = await signedIn();
    const response = await socketGet(instance, browser, '/api/untyped?n=100', { keepBody: true });
    expect(response.status).toBe(200);
    expect(response.headers['content-type']).toBeUndefined();
    expect(response.headers['content-length']).toBe('100');
    expect(response.body.equals(Buffer.alloc(100, 'u'))).toBe(true);
  });

  it("pass a HEAD response on as the upstream sent it: its Content-Length, and no body", async () => {
    const { instance, browser } = await signedIn();
    const get = await browser.request('/api/bytes?n=1000');
    const head = await browser.request('/api/bytes?n=1000', { method: 'HEAD' });
    expect(head.statusCode).toBe(200);
    expect(head.headers['content-length']).toBe('1000');
    expect(head.rawPayload.length).toBe(0);
    expect(get.rawPayload.length).toBe(1000);
    expect(instance.logsAfterStart.some((l) => Number(l.level) >= 40)).toBe(false);
  });

  it('leave responses without a Content-Length streaming: the browser has the first line long before the upstream sends the last', async () => {
    const { instance, browser } = await signedIn();
    const startedAt = Date.now();
    let firstChunkMs = -1;
    const response = await socketGet(instance, browser, '/api/drip?chunks=3&ms=600', {
      keepBody: true,
      onChunk: () => {
        if (firstChunkMs === -1) firstChunkMs = Date.now() - startedAt;
      },
    });
    expect(response.status).toBe(200);
    expect(response.body.toString()).toBe('line 1 of 3\nline 2 of 3\nline 3 of 3\n');
    // The upstream sends the last line 1.2 s after the first.
    expect(response.ms).toBeGreaterThanOrEqual(1_100);
    expect(firstChunkMs).toBeLessThan(response.ms - 900);
  });
});

describe('huge upstream responses', () => {
  it('streams a 200 MB response to a slow reader chunk by chunk with flat memory', async () => {
    const { instance, browser } = await signedIn();
    const size = 200 * MB;
    const rss = () => process.memoryUsage.rss();
    const baseline = rss();
    let peak = baseline;
    let nextSample = 0;
    let paused = false;
    const response = await socketGet(instance, browser, `/api/bytes?n=${size}`, {
      onChunk: (received, pause) => {
        if (received >= nextSample) {
          peak = Math.max(peak, rss());
          nextSample = received + MB;
        }
        // The browser stops reading for a while: token-handler must not buffer what the upstream keeps sending.
        if (!paused && received >= 10 * MB) {
          paused = true;
          pause(1_000);
          setTimeout(() => (peak = Math.max(peak, rss())), 950);
        }
      },
    });
    expect(response.status).toBe(200);
    expect(response.error).toBeUndefined();
    expect(response.bytes).toBe(size);
    expect(response.complete).toBe(true);
    expect(response.ms).toBeLessThan(20_000);
    expect(peak - baseline).toBeLessThan(100 * MB);
    await expectSessionWorks(browser);
  }, 25_000);
});
