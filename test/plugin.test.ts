/**
 * token-handler registered as a plugin on a team's existing Fastify server:
 * `app.register(tokenHandler, config)`. The host keeps its own routes and 404; ours answer
 * like the standalone service.
 */
import Fastify, { type FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig, tokenHandler, type Config } from '../src/app.js';
import { startProvider, type TestProvider } from './support/provider.js';
import { startIntrospectingUpstream, type Upstream } from './support/upstream.js';
import { PUBLIC_URL, REDIRECT_URI, SECRET, TestBrowser } from './support/bff.js';

let provider: TestProvider;
let upstream: Upstream;
let host: FastifyInstance;

function configFor(): Config {
  return parseConfig({
    publicUrl: PUBLIC_URL,
    oidc: { issuer: provider.issuer, clientId: provider.clients.basic.clientId, clientSecret: provider.clients.basic.clientSecret, allowInsecureIssuer: true },
    session: { secrets: [SECRET] },
    routes: [{ prefix: '/api', upstream: upstream.url }],
    metrics: { onMainListener: true },
    logging: { level: 'silent' },
  });
}

beforeAll(async () => {
  provider = await startProvider({ redirectUris: [REDIRECT_URI] });
  upstream = await startIntrospectingUpstream(provider);
  host = Fastify();
  host.get('/hello', async () => ({ hello: 'from the host' }));
  await host.register(tokenHandler, { ...configFor(), waitForProvider: true });
  await host.ready();
});

afterAll(async () => {
  await host.close();
  await upstream.close();
  await provider.stop();
});

describe('token-handler as a Fastify plugin', () => {
  it('signs a user in and proxies their API calls with the access token, on the host server', async () => {
    const browser = new TestBrowser(host);
    const callback = await browser.login({ login: 'plugin-user', returnTo: '/hello' });
    expect(callback.statusCode).toBe(302);
    expect(callback.headers.location).toBe('/hello');
    expect((await browser.request('/auth/user', { csrf: false })).json().claims.sub).toBe('plugin-user');
    const api = await browser.request('/api/orders');
    expect(api.statusCode).toBe(200);
    expect(upstream.requests.at(-1)?.headers.authorization).toMatch(/^Bearer /);
  });

  it("answers its own routes' errors as token-handler does (JSON, no token)", async () => {
    const response = await host.inject({ method: 'GET', url: '/api/orders', headers: { 'x-csrf': '1' } });
    expect(response.statusCode).toBe(401);
    expect(response.json()).toMatchObject({ error: 'login_required' });
  });

  it("leaves the host's own routes and its 404 to the host", async () => {
    expect((await host.inject({ method: 'GET', url: '/hello' })).json()).toEqual({ hello: 'from the host' });
    const missing = await host.inject({ method: 'GET', url: '/nowhere' });
    expect(missing.statusCode).toBe(404);
    expect(missing.json()).not.toHaveProperty('error_description');
  });

  it('serves health and metrics beside the host routes', async () => {
    expect((await host.inject({ method: 'GET', url: '/healthz' })).statusCode).toBe(200);
    expect((await host.inject({ method: 'GET', url: '/readyz' })).statusCode).toBe(200);
    await host.inject({ method: 'GET', url: '/api/counted', headers: { 'x-csrf': '1' } });
    const metrics = await host.inject({ method: 'GET', url: '/metrics' });
    // The plugin's own requests are counted, through a hook on its routes.
    expect(metrics.body).toMatch(/token_handler_http_requests_total\{group="api:\/api",status="401",app="default"\} [1-9]/);
  });
});
