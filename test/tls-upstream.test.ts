import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listen, closeServer } from './support/ports.js';
import { startProvider, type TestProvider } from './support/provider.js';
import { REDIRECT_URI, SECRET, startBff, TestBrowser, type TestBff } from './support/bff.js';

const hasOpenssl = spawnSync('openssl', ['version'], { stdio: 'ignore' }).status === 0;
if (!hasOpenssl) console.warn('\n!!! SKIPPED test/tls-upstream.test.ts: no openssl binary to make a test certificate\n');

describe.runIf(hasOpenssl)('an https upstream', () => {
  let provider: TestProvider;
  let server: Server;
  let upstreamUrl: string;
  let caFile: string;
  const started: TestBff[] = [];

  beforeAll(async () => {
    const dir = mkdtempSync(join(tmpdir(), 'th-tls-'));
    caFile = join(dir, 'cert.pem');
    const keyFile = join(dir, 'key.pem');
    const made = spawnSync('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1',
      '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', keyFile, '-out', caFile,
    ]);
    if (made.status !== 0) throw new Error(`openssl failed: ${made.stderr.toString()}`);
    server = createServer({ key: readFileSync(keyFile), cert: readFileSync(caFile) }, (req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ path: req.url, authorized: !!req.headers.authorization }));
    });
    upstreamUrl = `https://127.0.0.1:${await listen(server)}`;
    provider = await startProvider({ redirectUris: [REDIRECT_URI] });
  });

  afterAll(async () => {
    for (const bff of started) await bff.app.close();
    await closeServer(server as unknown as import('node:http').Server);
    await provider.stop();
  });

  async function bffWith(route: Record<string, unknown>): Promise<TestBff> {
    const instance = await startBff({
      oidc: { issuer: provider.issuer, clientId: provider.clients.basic.clientId, clientSecret: provider.clients.basic.clientSecret },
      session: { secrets: [SECRET] },
      routes: [{ prefix: '/api', upstream: upstreamUrl, ...route }],
    });
    started.push(instance);
    return instance;
  }

  it('is refused with 502 when its certificate is not trusted', async () => {
    const { app } = await bffWith({});
    const browser = new TestBrowser(app);
    await browser.login();
    const response = await browser.request('/api/x');
    expect(response.statusCode).toBe(502);
    expect(response.json().error).toBe('upstream_unavailable');
  });

  it('is reached when its CA is configured with tlsCaFile', async () => {
    const { app } = await bffWith({ tlsCaFile: caFile });
    const browser = new TestBrowser(app);
    await browser.login();
    const response = await browser.request('/api/x');
    expect(response.statusCode).toBe(200);
    expect(response.json()).toEqual({ path: '/x', authorized: true });
  });

  it('is reached without verification only after an explicit opt-out, logged loudly at startup', async () => {
    const instance = await bffWith({ tlsRejectUnauthorized: false });
    const browser = new TestBrowser(instance.app);
    await browser.login();
    expect((await browser.request('/api/x')).statusCode).toBe(200);
    expect(instance.logs.some((l) => l.level === 40 && String(l.msg).includes('TLS certificate verification is OFF'))).toBe(true);
  });
});
