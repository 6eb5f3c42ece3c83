/**
 * A SPA behind token-handler in a real browser, as the README's recipe sets it up: the
 * production build served by the frontend route (deep links, hashed assets), the dev
 * server proxied with its hot-reload WebSocket, sign-in that comes back to the SPA's
 * route, a failed sign-in shown as a page with a working link, and fetch calls that
 * always get JSON.
 */
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { SECRET, startBff, type TestBff } from '../support/bff.js';
import { freePort } from '../support/ports.js';
import { startProvider, type TestProvider } from '../support/provider.js';
import { startDevServer, writeSpaBuild, type DevServer } from '../support/spa.js';
import { findTokens, HAS_CHROMIUM, launchChromium, NetworkLog, newContext, screenshotPath, warnWhenNoChromium } from './support.js';

warnWhenNoChromium('test/e2e/spa.browser.test.ts');

interface Site {
  bff: TestBff;
  url: string;
}

/** What the SPA's window.callApi answers (test/support/spa.ts). */
interface ApiAnswer {
  status: number;
  type: string | null;
  body: string;
}

describe.skipIf(!HAS_CHROMIUM)('a SPA behind token-handler in a real browser', () => {
  let provider: TestProvider;
  let devServer: DevServer;
  let built: Site;
  let dev: Site;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  let network: NetworkLog;

  /** token-handler on a real port with the given frontend route (and an API route nobody answers). */
  async function site(port: number, frontend: Record<string, unknown>): Promise<Site> {
    const url = `http://127.0.0.1:${port}`;
    const bff = await startBff({
      publicUrl: url,
      listen: { host: '127.0.0.1', port },
      oidc: { issuer: provider.issuer, clientId: provider.clients.basic.clientId, clientSecret: provider.clients.basic.clientSecret },
      session: { secrets: [SECRET] },
      routes: [{ prefix: '/api', upstream: 'http://127.0.0.1:9' }, { prefix: '/', ...frontend }],
      logging: { level: 'warn' },
    });
    await bff.app.listen({ host: '127.0.0.1', port });
    return { bff, url };
  }

  beforeAll(async () => {
    const [builtPort, devPort] = [await freePort(), await freePort()];
    provider = await startProvider({ redirectUris: [`http://127.0.0.1:${builtPort}/auth/callback`, `http://127.0.0.1:${devPort}/auth/callback`] });
    devServer = await startDevServer();
    built = await site(builtPort, { static: writeSpaBuild() });
    dev = await site(devPort, { upstream: devServer.url, token: 'none', anonymous: true, websocket: true });
    browser = await launchChromium();
  });

  afterAll(async () => {
    await browser?.close();
    await built?.bff.app.close();
    await dev?.bff.app.close();
    await devServer?.close();
    await provider?.stop();
  });

  beforeEach(async () => {
    context = await newContext(browser);
    network = new NetworkLog(context);
    page = await context.newPage();
  });

  afterEach(async () => {
    await context?.close();
  });

  /** Nothing the browser received carries a token the provider issued. */
  const expectNoTokenReachedTheBrowser = async () => {
    await network.settled();
    const issued = provider.tokenRequests.flatMap((record) => Object.values(record.issued ?? {}));
    expect(issued.length).toBeGreaterThan(0);
    expect(findTokens(network.all(), issued)).toEqual([]);
  };

  /** On the provider's development pages: any login, then consent. */
  const signInAtProvider = async (login: string) => {
    await page.waitForURL((url) => url.origin === provider.issuer);
    await page.locator('input[name="login"]').fill(login);
    await page.locator('input[name="password"]').fill('any password');
    await page.getByRole('button', { name: 'Sign-in' }).click();
    await page.getByRole('button', { name: 'Continue' }).click();
  };

  const callApi = (path: string) => page.evaluate(`window.callApi(${JSON.stringify(path)})`) as Promise<ApiAnswer>;

  it('a deep link into the built SPA loads its page and its hashed script', async () => {
    const response = await page.goto(`${built.url}/orders/42?tab=items`);
    expect(response?.status()).toBe(200);
    expect(response?.headers()['cache-control']).toBe('no-cache');
    await page.locator('#route', { hasText: '/orders/42' }).waitFor();
    await page.locator('#who[data-state="signed-out"]').waitFor();
    await network.settled();
    const script = network.all().find((r) => new URL(r.url).pathname.startsWith('/assets/'));
    expect(script?.headers.find((h) => h.name.toLowerCase() === 'cache-control')?.value).toBe('public, max-age=31536000, immutable');
  });

  it('signing in from a deep link comes back to the same SPA route, signed in', async () => {
    await page.goto(`${built.url}/orders/42?tab=items`);
    await page.locator('#who[data-state="signed-out"]').waitFor();
    await page.locator('#sign-in').click();
    await signInAtProvider('spa-user');
    await page.waitForURL(`${built.url}/orders/42?tab=items`);
    await page.locator('#who[data-state="signed-in"]', { hasText: 'spa-user' }).waitFor();
    await page.screenshot({ path: screenshotPath('spa-signed-in.png'), fullPage: true });
    await expectNoTokenReachedTheBrowser();
  });

  it("the SPA's fetch calls get JSON, never index.html: an API answer, a missing /auth path, a failed sign-in response", async () => {
    await page.goto(`${built.url}/settings`);
    await page.locator('#who[data-state="signed-out"]').waitFor();
    expect(await callApi('/api/orders')).toMatchObject({ status: 401, type: 'application/json; charset=utf-8', body: expect.stringContaining('"login_required"') });
    expect(await callApi('/auth/nothing-here')).toMatchObject({ status: 404, type: 'application/json; charset=utf-8', body: expect.stringContaining('"not_found"') });
    expect(await callApi('/auth/callback?code=x&state=forged')).toMatchObject({ status: 400, type: 'application/json; charset=utf-8' });
  });

  it("a sign-in cancelled at the provider shows token-handler's page, whose link starts a new sign-in", async () => {
    await page.goto(`${built.url}/reports`);
    await page.locator('#who[data-state="signed-out"]').waitFor();
    await page.locator('#sign-in').click();
    await page.waitForURL((url) => url.origin === provider.issuer);
    await page.getByRole('link', { name: 'Cancel' }).click();
    await page.waitForURL((url) => url.origin === built.url && url.pathname === '/auth/callback');
    await page.getByRole('heading', { name: 'Sign-in failed' }).waitFor();
    expect(await page.locator('main p').first().textContent()).toContain('access_denied');
    await page.screenshot({ path: screenshotPath('spa-sign-in-cancelled.png'), fullPage: true });
    await page.getByRole('link', { name: 'Sign in again' }).click();
    await page.waitForURL((url) => url.origin === provider.issuer);
    await page.locator('input[name="login"]').waitFor();
  });

  it("the dev server's page, through token-handler, reloads when the dev server says so over its WebSocket", async () => {
    await page.goto(`${dev.url}/orders/7`);
    await page.locator('#route', { hasText: '/orders/7' }).waitFor();
    await page.locator('#hot[data-state="connected"]').waitFor();
    const load = await page.locator('#load').textContent();
    // The WebSocket went through token-handler's origin, not to the dev server directly.
    expect(new URL(page.url()).origin).toBe(dev.url);
    expect(devServer.requests.filter((r) => r.upgrade && r.path === '/__hot').length).toBeGreaterThan(0);
    devServer.reload();
    await expect.poll(() => page.locator('#load').textContent(), { timeout: 10_000 }).not.toBe(load);
    await page.locator('#hot[data-state="connected"]').waitFor();
  });

  it('signing in on the dev server comes back to its route, and the dev server never sees the session cookie', async () => {
    await page.goto(`${dev.url}/inbox`);
    await page.locator('#who[data-state="signed-out"]').waitFor();
    await page.locator('#sign-in').click();
    await signInAtProvider('dev-user');
    await page.waitForURL(`${dev.url}/inbox`);
    await page.locator('#who[data-state="signed-in"]', { hasText: 'dev-user' }).waitFor();
    expect((await context.cookies(dev.url)).some((cookie) => cookie.name === 'th_session')).toBe(true);
    for (const seen of devServer.requests) expect(seen.headers.cookie ?? '').not.toContain('th_session');
    await expectNoTokenReachedTheBrowser();
  });
});
