/**
 * The frontend route: the SPA on token-handler's own origin, as a built directory or
 * its dev server, below /auth, the operational endpoints and the API routes.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { startProvider, type TestProvider } from './support/provider.js';
import { startUpstream, type Upstream } from './support/upstream.js';
import { REDIRECT_URI, SECRET, startBff, TestBrowser, type TestBff } from './support/bff.js';
import { ASSET, startDevServer, writeSpaBuild, type DevServer } from './support/spa.js';

let provider: TestProvider;
let upstream: Upstream;
let devServer: DevServer;
let spaDir: string;
let built: TestBff;
let dev: TestBff;

const PAGE_LOAD = { 'sec-fetch-mode': 'navigate', 'sec-fetch-dest': 'document', accept: 'text/html,application/xhtml+xml,*/*;q=0.8' };
const SCRIPT_FETCH = { 'sec-fetch-mode': 'cors', accept: '*/*' };

function bff(frontend: Record<string, unknown>, extra: Record<string, unknown> = {}): Promise<TestBff> {
  return startBff({
    oidc: { issuer: provider.issuer, clientId: provider.clients.basic.clientId, clientSecret: provider.clients.basic.clientSecret },
    session: { secrets: [SECRET] },
    routes: [{ prefix: '/api', upstream: upstream.url }, { prefix: '/', ...frontend }],
    logging: { level: 'warn' },
    ...extra,
  });
}

beforeAll(async () => {
  provider = await startProvider({ redirectUris: [REDIRECT_URI] });
  upstream = await startUpstream({
    introspectionEndpoint: provider.endpoints.introspection,
    clientId: provider.clients.api.clientId,
    clientSecret: provider.clients.api.clientSecret,
  });
  devServer = await startDevServer();
  spaDir = writeSpaBuild();
  built = await bff({ static: spaDir });
  dev = await bff({ upstream: devServer.url, token: 'none', anonymous: true, websocket: true });
});

afterAll(async () => {
  await built?.app.close();
  await dev?.app.close();
  await devServer?.close();
  await upstream?.close();
  await provider?.stop();
});

const get = (app: TestBff, url: string, headers: Record<string, string> = PAGE_LOAD) => app.app.inject({ method: 'GET', url, headers });

describe('the frontend route serving a built SPA', () => {
  it("a deep link opened in the browser gets the SPA's index.html, revalidated on every visit", async () => {
    const response = await get(built, '/orders/42?tab=items');
    expect(response.statusCode).toBe(200);
    expect(response.headers['content-type']).toMatch(/^text\/html/);
    expect(response.body).toBe(readFileSync(join(spaDir, 'index.html'), 'utf8'));
    expect(response.headers['cache-control']).toBe('no-cache');
  });

  it('the start page is index.html, revalidated on every visit', async () => {
    const response = await get(built, '/');
    expect(response.statusCode).toBe(200);
    expect(response.body).toContain('<h1>The SPA</h1>');
    expect(response.headers['cache-control']).toBe('no-cache');
  });

  it('a hashed asset is cached for a year without revalidation', async () => {
    const response = await get(built, ASSET, SCRIPT_FETCH);
    expect(response.statusCode).toBe(200);
    expect(response.headers['content-type']).toMatch(/^(text|application)\/javascript/);
    expect(response.headers['cache-control']).toBe('public, max-age=31536000, immutable');
  });

  it('a file without a hash in its name is revalidated', async () => {
    const response = await get(built, '/robots.txt', SCRIPT_FETCH);
    expect(response.statusCode).toBe(200);
    expect(response.headers['cache-control']).toBe('no-cache');
  });

  it('a browser that accepts gzip gets the files compressed', async () => {
    const response = await built.app.inject({ method: 'GET', url: ASSET, headers: { ...SCRIPT_FETCH, 'accept-encoding': 'gzip' } });
    expect(response.headers['content-encoding']).toBe('gzip');
    expect(gunzipSync(response.rawPayload).toString()).toBe(readFileSync(join(spaDir, ASSET), 'utf8'));
  });

  it('a missing asset is a 404, not index.html', async () => {
    const response = await get(built, '/assets/gone-00000000.js', { 'sec-fetch-mode': 'no-cors', 'sec-fetch-dest': 'script', accept: '*/*' });
    expect(response.statusCode).toBe(404);
    expect(response.json()).toMatchObject({ error: 'not_found' });
  });

  it('a file whose name starts with a dot is never served', async () => {
    const response = await get(built, '/.env', SCRIPT_FETCH);
    expect(response.statusCode).toBe(404);
    expect(response.body).not.toContain('do-not-serve');
  });

  it('pages carry the security headers of a SPA: no sniffing, no framing, same-origin referrer, the default CSP', async () => {
    const response = await get(built, '/settings');
    expect(response.headers['x-content-type-options']).toBe('nosniff');
    expect(response.headers['x-frame-options']).toBe('DENY');
    expect(response.headers['referrer-policy']).toBe('same-origin');
    expect(response.headers['content-security-policy']).toMatch(/^default-src 'self';.*frame-ancestors 'none'/);
  });

  it('a configured Content-Security-Policy replaces the default one', async () => {
    const custom = await bff({ static: spaDir, contentSecurityPolicy: "default-src 'self'; connect-src 'self' https://telemetry.example.com" });
    try {
      expect((await get(custom, '/')).headers['content-security-policy']).toBe("default-src 'self'; connect-src 'self' https://telemetry.example.com");
    } finally {
      await custom.app.close();
    }
  });

  it('a script asking an API path for HTML gets the API answer as JSON, never index.html', async () => {
    const response = await get(built, '/api/orders', { ...SCRIPT_FETCH, accept: 'text/html', 'x-csrf': '1' });
    expect(response.statusCode).toBe(401);
    expect(response.json()).toMatchObject({ error: 'login_required' });
  });

  it('a path below /auth that does not exist is a JSON 404, never index.html', async () => {
    const response = await get(built, '/auth/nothing-here', SCRIPT_FETCH);
    expect(response.statusCode).toBe(404);
    expect(response.json()).toMatchObject({ error: 'not_found' });
  });

  it('a form posted to a page path is a JSON 404', async () => {
    const response = await built.app.inject({ method: 'POST', url: '/orders', headers: { 'content-type': 'application/json', ...SCRIPT_FETCH }, payload: '{}' });
    expect(response.statusCode).toBe(404);
    expect(response.json()).toMatchObject({ error: 'not_found' });
  });

  it('/auth, the health endpoints and the API routes win over the catch-all', async () => {
    const login = await get(built, '/auth/login');
    expect(login.statusCode).toBe(302);
    expect(String(login.headers.location)).toMatch(new RegExp(`^${provider.issuer}/`));
    expect((await get(built, '/healthz', SCRIPT_FETCH)).json()).toMatchObject({ status: 'ok' });
    const browser = new TestBrowser(built.app);
    await browser.login();
    const api = await browser.request('/api/orders');
    expect(api.statusCode).toBe(200);
    expect(api.json()).toMatchObject({ path: '/orders', sub: 'alice' });
  });
});

describe("the frontend route in front of the SPA's dev server", () => {
  it("a page load is the dev server's page, with neither token-handler's cookie nor a token sent to it", async () => {
    const browser = new TestBrowser(dev.app);
    await browser.login();
    const page = await browser.request('/orders/42', { headers: PAGE_LOAD, csrf: false });
    expect(page.statusCode).toBe(200);
    expect(page.body).toContain('<h1>The SPA</h1>');
    const seen = devServer.requests.at(-1)!;
    expect(seen.path).toBe('/orders/42');
    expect(seen.headers.cookie ?? '').not.toContain('th_session');
    expect(seen.headers.authorization).toBeUndefined();
  });

  it('a path below /auth that does not exist is a JSON 404, not passed to the dev server', async () => {
    const before = devServer.requests.length;
    const response = await get(dev, '/auth/nothing-here', SCRIPT_FETCH);
    expect(response.statusCode).toBe(404);
    expect(response.json()).toMatchObject({ error: 'not_found' });
    expect(devServer.requests.length).toBe(before);
  });

  it("the hot-reload WebSocket reaches the dev server through token-handler, without token-handler's cookie", async () => {
    await dev.app.listen({ host: '127.0.0.1', port: 0 });
    const address = dev.app.server.address() as { port: number };
    const socket = new WebSocket(`ws://127.0.0.1:${address.port}/__hot?token=abc`, 'vite-hmr', { headers: { cookie: '__Host-th_session=not-for-the-dev-server; theme=dark' } });
    const first = await new Promise<string>((resolve, reject) => {
      socket.on('message', (data) => resolve(data.toString()));
      socket.on('error', reject);
    });
    expect(JSON.parse(first)).toEqual({ type: 'connected' });
    expect(socket.protocol).toBe('vite-hmr');
    const upgrade = devServer.requests.filter((r) => r.upgrade).at(-1)!;
    expect(upgrade.path).toBe('/__hot?token=abc');
    expect(upgrade.headers.cookie).toBe('theme=dark');
    socket.close();
  });
});
