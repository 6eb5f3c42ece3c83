/**
 * The demo stack and the helper's route over plain HTTP (no browser needed): how
 * `/auth/client.js` and the demo page are served, when the CLI picks the demo, and a
 * busy port.
 */
import { readFileSync } from 'node:fs';
import { createServer, request as httpRequest } from 'node:http';
import { Writable } from 'node:stream';
import Fastify from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDemo, type DemoStack } from '../../src/demo/index.js';
import { demoMode } from '../../src/demo/mode.js';
import { availablePort, closeServer, listenLoopback } from '../../src/demo/net.js';
import { CLIENT_MODULE_FILE, clientModuleRoute } from '../../src/routes/client-module.js';

describe('the demo stack over HTTP', () => {
  let demo: DemoStack;

  beforeAll(async () => {
    demo = await startDemo({ port: 0, logLevel: 'silent' });
  });

  afterAll(async () => {
    await demo?.close();
  });

  it('serves the browser helper at /auth/client.js as JavaScript that browsers revalidate by ETag', async () => {
    const response = await fetch(`${demo.publicUrl}/auth/client.js`);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toBe('text/javascript; charset=utf-8');
    expect(response.headers.get('cache-control')).toBe('no-cache');
    expect(response.headers.get('x-content-type-options')).toBe('nosniff');
    expect(await response.text()).toBe(readFileSync(CLIENT_MODULE_FILE, 'utf8'));
    const etag = response.headers.get('etag');
    expect(etag).toMatch(/^"[\w-]+"$/);

    const again = await fetch(`${demo.publicUrl}/auth/client.js`, { headers: { 'if-none-match': `W/${etag}, "other"` } });
    expect(again.status).toBe(304);
    expect(await again.text()).toBe('');
    const changed = await fetch(`${demo.publicUrl}/auth/client.js`, { headers: { 'if-none-match': '"something-else"' } });
    expect(changed.status).toBe(200);
    const head = await fetch(`${demo.publicUrl}/auth/client.js`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers.get('content-type')).toBe('text/javascript; charset=utf-8');
  });

  it('serves the demo page with a strict Content-Security-Policy', async () => {
    const response = await fetch(demo.url);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toBe('text/html; charset=utf-8');
    const csp = response.headers.get('content-security-policy') ?? '';
    expect(csp).toContain("script-src 'self'");
    expect(csp).toContain("frame-ancestors 'none'");
    expect(csp).not.toContain('unsafe');
    expect(await response.text()).toContain('<script type="module" src="/demo.js"></script>');
    for (const asset of ['/demo.js', '/demo.css', '/favicon.svg']) {
      expect((await fetch(`${demo.publicUrl}${asset}`)).status, asset).toBe(200);
    }
  });

  it('sends a visitor who typed another host name (localhost) to the public URL, whose cookies and origin checks apply', async () => {
    const port = new URL(demo.publicUrl).port;
    const answer = await new Promise<{ status: number; location: string | undefined }>((resolve, reject) => {
      const req = httpRequest({ host: '127.0.0.1', port, path: '/?a=1', headers: { host: `localhost:${port}` } }, (res) => {
        res.resume();
        resolve({ status: res.statusCode ?? 0, location: res.headers.location });
      });
      req.on('error', reject);
      req.end();
    });
    expect(answer).toEqual({ status: 302, location: `${demo.publicUrl}/?a=1` });
  });

  it('refuses API calls without a session, and without the CSRF header, before they reach the API', async () => {
    const before = demo.apiRequests().length;
    const noHeader = await fetch(`${demo.publicUrl}/api/hello`);
    expect(noHeader.status).toBe(403);
    expect(((await noHeader.json()) as { error: string }).error).toBe('csrf_failed');
    const noSession = await fetch(`${demo.publicUrl}/api/hello`, { headers: { 'x-csrf': '1' } });
    expect(noSession.status).toBe(401);
    expect(((await noSession.json()) as { error: string }).error).toBe('login_required');
    expect(demo.apiRequests().length).toBe(before);
    // The API itself trusts nothing but an active bearer token.
    const direct = await fetch(`${demo.apiUrl}/hello`, { headers: { authorization: 'Bearer not-a-token' } });
    expect(direct.status).toBe(401);
    expect(direct.headers.get('www-authenticate')).toContain('invalid_token');
  });
});

describe('the browser helper route', () => {
  it('answers 404 and logs an error, without stopping the service, when the helper file is missing', async () => {
    let logs = '';
    const stream = new Writable({
      write(chunk: Buffer, _encoding, done) {
        logs += chunk.toString();
        done();
      },
    });
    const app = Fastify({ logger: { level: 'error', stream } });
    await app.register(clientModuleRoute, { file: new URL('./no-such-file.js', import.meta.url) });
    await app.ready();
    const response = await app.inject({ method: 'GET', url: '/auth/client.js' });
    expect(response.statusCode).toBe(404);
    expect(logs).toContain('browser helper not found');
    await app.close();
  });
});

describe('when the CLI runs the demo', () => {
  it.each([
    { demo: true, config: undefined, env: { TH_CONFIG: 'x.yaml' }, expected: 'explicit' },
    { demo: false, config: undefined, env: {}, expected: 'default' },
    { demo: false, config: undefined, env: { TH_OIDC_ISSUER: '', PATH: '/bin' }, expected: 'default' },
    { demo: false, config: undefined, env: { TH_LISTEN_PORT: '9090' }, expected: null },
    { demo: false, config: 'token-handler.yaml', env: {}, expected: null },
    { demo: false, config: undefined, env: { TH_CONFIG: 'token-handler.yaml' }, expected: null },
    { demo: false, config: undefined, env: { TH_SESSION_SECRETS: 'x'.repeat(32) }, expected: null },
    { demo: false, config: undefined, env: { NODE_ENV: 'production' }, expected: null },
    { demo: true, config: undefined, env: { NODE_ENV: 'production', TH_LISTEN_PORT: '9090' }, expected: 'explicit' },
  ])('demo asked $demo, --config $config, env $env → $expected', ({ demo, config, env, expected }) => {
    expect(demoMode(demo, config, env)).toBe(expected);
  });
});

describe('a busy port', () => {
  it('stops the demo before anything starts, with EADDRINUSE', async () => {
    const blocker = createServer();
    const port = await listenLoopback(blocker, 0);
    try {
      await expect(startDemo({ port, logLevel: 'silent' })).rejects.toMatchObject({ code: 'EADDRINUSE' });
    } finally {
      await closeServer(blocker);
    }
    // And the port is usable again afterwards.
    expect(await availablePort(port)).toBe(port);
  });
});
