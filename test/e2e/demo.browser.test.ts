/**
 * The demo in a real browser (Debian chromium + playwright-core): sign in through the
 * provider's pages, call the API, watch the access token run out and be refreshed,
 * force a refresh, sign out, and a hostile page on another origin. In every scenario
 * the page's script sees no session cookie and nothing the browser received carries a
 * token the provider issued.
 */
import { Writable } from 'node:stream';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startDemo, type DemoStack } from '../../src/demo/index.js';
import { callApiFromPage, expectHttpOnlySessionCookie, expectNoTokenReached, expectPageCannotSeeSessionCookie, HAS_CHROMIUM, launchChromium, NetworkLog, openWatchedPage, screenshotPath, SESSION_COOKIE, signIn, signOut, startOtherOrigin, warnWhenNoChromium } from './support.js';

warnWhenNoChromium('test/e2e/demo.browser.test.ts');

/** Short enough to wait out in a test, long enough to sign in before it runs out. */
const ACCESS_TOKEN_SECONDS = 3;

describe.skipIf(!HAS_CHROMIUM)('the demo in a real browser', () => {
  let demo: DemoStack;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  let network: NetworkLog;
  let logText = '';

  beforeAll(async () => {
    const logStream = new Writable({
      write(chunk: Buffer, _encoding, done) {
        logText += chunk.toString();
        done();
      },
    });
    [demo, browser] = await Promise.all([
      startDemo({ port: 0, accessTokenSeconds: ACCESS_TOKEN_SECONDS, refreshSkewSeconds: 1, logLevel: 'info', logStream }),
      launchChromium(),
    ]);
  });

  afterAll(async () => {
    await browser?.close();
    await demo?.close();
  });

  beforeEach(async () => {
    ({ context, network, page } = await openWatchedPage(browser, demo));
  });

  afterEach(async () => {
    await context?.close();
  });

  /** Every scenario ends here: no token in anything the browser received, nor in token-handler's logs. */
  const expectNoTokenReachedTheBrowser = () => expectNoTokenReached(network, demo, { logText });

  it("before signing in, the page states the provider's access-token life", async () => {
    await page.goto(demo.url);
    await page.locator('#who[data-state="signed-out"]').waitFor();
    expect(await page.locator('#token-life').textContent()).toBe(String(ACCESS_TOKEN_SECONDS));
    expect(await page.locator('#signed-out-title').textContent()).toBe('You are signed out');
    expect(await page.locator('#signed-out-note').isHidden()).toBe(true);
  });

  it("the provider's sign-in and consent pages look like the demo, without a debug panel", async () => {
    await page.goto(demo.url);
    await page.locator('#who[data-state="signed-out"]').waitFor();
    await network.settled();
    await page.getByRole('link', { name: 'Sign in' }).click();
    await page.waitForURL((url) => url.origin === demo.providerUrl);
    await page.getByRole('heading', { name: 'Sign in' }).waitFor();
    expect(await page.locator('header.topbar').textContent()).toContain('token-handler');
    expect(await page.content()).not.toMatch(/debug/i);
    await page.screenshot({ path: screenshotPath('provider-sign-in.png'), fullPage: true });
    await page.locator('input[name="login"]').fill('alice');
    await page.locator('input[name="password"]').fill('secret');
    await page.getByRole('button', { name: 'Sign in', exact: true }).click();
    await page.getByRole('heading', { name: 'Allow token-handler demo?' }).waitFor();
    expect(await page.locator('li').allTextContents()).toEqual(['your name profile', 'your e-mail address email']);
    expect(await page.content()).not.toMatch(/debug/i);
    await page.screenshot({ path: screenshotPath('provider-consent.png'), fullPage: true });
    await page.getByRole('button', { name: 'Allow and continue' }).click();
    await page.waitForURL(demo.url);
    await page.locator('#who[data-state="signed-in"]').waitFor();
  });

  it('signing in through the provider pages shows who you are, and the page cannot read the session cookie', async () => {
    await page.goto(demo.url);
    await page.locator('#who[data-state="signed-out"]').waitFor();
    await expectPageCannotSeeSessionCookie(page);

    await signIn(page, demo, network, 'alice');
    expect(await page.locator('#user-sub').textContent()).toBe('alice');
    expect(await page.locator('#user-name').textContent()).toBe('Alice');
    expect(await page.locator('#user-email').textContent()).toBe('alice@example.test');
    expect(await page.locator('#document-cookie').textContent()).toBe('"" (empty)');
    await expectPageCannotSeeSessionCookie(page);
    await expectHttpOnlySessionCookie(context, demo);

    // The code was exchanged at the provider, by token-handler, not by the browser.
    expect(demo.tokenRequests().some((r) => r.grantType === 'authorization_code' && r.status === 200)).toBe(true);
    await expectNoTokenReachedTheBrowser();
  });

  it('the API answers the page, and still answers once the access token has run out, because token-handler refreshed it', async () => {
    await signIn(page, demo, network);
    expect(await callApiFromPage(page)).toBe(200);
    const first = JSON.parse((await page.locator('#api-body').textContent()) ?? '{}') as Record<string, unknown>;
    expect(first.sub).toBe('alice');
    expect(first.message).toMatch(/^Hello, alice!/);

    const refreshedBefore = await page.locator('#refreshed-at').getAttribute('data-iso');
    const expiresAt = Date.parse((await page.locator('#token-seconds').getAttribute('data-expires-at')) ?? '');
    expect(Number.isFinite(expiresAt)).toBe(true);
    const refreshGrantsBefore = demo.tokenRequests().filter((r) => r.grantType === 'refresh_token').length;

    // Wait the access token out; the page shows it as expired.
    await page.waitForTimeout(Math.max(0, expiresAt - Date.now()) + 300);
    await page.locator('.countdown.expired').waitFor();

    expect(await callApiFromPage(page)).toBe(200);
    const second = JSON.parse((await page.locator('#api-body').textContent()) ?? '{}') as Record<string, unknown>;
    expect(second.sub).toBe('alice');
    expect(second.tokenExpiresInSeconds).toBeGreaterThan(0);

    await expect.poll(() => page.locator('#refreshed-at').getAttribute('data-iso')).not.toBe(refreshedBefore);
    expect(await page.locator('#refreshed-at').getAttribute('data-iso')).not.toBe('');
    await page.locator('.events li.refresh').first().waitFor();
    const refreshGrants = demo.tokenRequests().filter((r) => r.grantType === 'refresh_token');
    expect(refreshGrants.length).toBeGreaterThan(refreshGrantsBefore);
    expect(refreshGrants.at(-1)?.status).toBe(200);

    await page.screenshot({ path: screenshotPath('demo-after-refresh.png'), fullPage: true });
    await expectPageCannotSeeSessionCookie(page);
    await expectHttpOnlySessionCookie(context, demo);
    await expectNoTokenReachedTheBrowser();
  });

  it('"Refresh now" gets a new access token at once', async () => {
    await signIn(page, demo, network);
    const refreshedBefore = await page.locator('#refreshed-at').getAttribute('data-iso');
    const refreshGrantsBefore = demo.tokenRequests().filter((r) => r.grantType === 'refresh_token').length;

    const answered = page.waitForResponse((r) => new URL(r.url()).pathname === '/auth/refresh');
    await page.locator('#refresh-now').click();
    expect((await answered).status()).toBe(200);
    await page.locator('#refresh-count', { hasText: '1' }).waitFor();
    const refreshedAfter = await page.locator('#refreshed-at').getAttribute('data-iso');
    expect(refreshedAfter).not.toBe(refreshedBefore);
    expect(refreshedAfter).not.toBe('');
    expect(demo.tokenRequests().filter((r) => r.grantType === 'refresh_token' && r.status === 200).length).toBe(refreshGrantsBefore + 1);

    // The refreshed session works for the API.
    expect(await callApiFromPage(page)).toBe(200);
    await expectPageCannotSeeSessionCookie(page);
    await expectNoTokenReachedTheBrowser();
  });

  it('after signing out, the page says so and the API answers 401 login_required', async () => {
    await signIn(page, demo, network);
    expect(await callApiFromPage(page)).toBe(200);

    await signOut(page, demo, network);
    expect((await context.cookies(demo.publicUrl)).some((c) => c.name.startsWith(SESSION_COOKIE))).toBe(false);
    // The page says so, once: the ?signed-out it came back with is dropped.
    await page.locator('#signed-out-title', { hasText: 'You have signed out' }).waitFor();
    expect(await page.locator('#signed-out-note').isVisible()).toBe(true);
    await expect.poll(() => page.url()).toBe(demo.url);
    await page.screenshot({ path: screenshotPath('demo-signed-out.png'), fullPage: true });
    // token-handler answered where to go to end the provider's session too, without the ID token in it.
    const logout = network.at('/auth/logout').find((r) => r.body);
    expect(logout?.status).toBe(200);
    const { logoutUrl } = JSON.parse(logout!.body!) as { logoutUrl: string };
    expect(new URL(logoutUrl).origin).toBe(demo.providerUrl);
    expect(new URL(logoutUrl).searchParams.has('id_token_hint')).toBe(false);

    expect(await callApiFromPage(page)).toBe(401);
    expect(await page.locator('#api-body').textContent()).toContain('login_required');
    const user = await page.evaluate(async () => {
      const response = await fetch('/auth/user');
      return { status: response.status, body: await response.text() };
    });
    expect(user.status).toBe(401);
    expect(user.body).toContain('login_required');
    await expectPageCannotSeeSessionCookie(page);

    // The provider's session ended too: signing in again asks for the password.
    await network.settled();
    await page.getByRole('link', { name: 'Sign in' }).click();
    await page.waitForURL((url) => url.origin === demo.providerUrl);
    await page.locator('input[name="password"]').waitFor();
    await expectNoTokenReachedTheBrowser();
  });

  it('a page on another origin cannot use the session: the API call with the CSRF header fails its preflight, without it gets 403, and nothing is readable', async () => {
    await signIn(page, demo, network);
    const apiCallsBefore = demo.apiRequests().length;
    const attacker = await startOtherOrigin(attackerPage(demo.publicUrl));
    try {
      const evil = await context.newPage();
      await network.intercept(evil, demo.publicUrl);
      await evil.goto(attacker.url);
      const results = (await evil.waitForFunction(() => (globalThis as unknown as { results?: unknown }).results, undefined, { timeout: 10_000 }).then((h) =>
        h.jsonValue(),
      )) as Record<string, { status?: number; type?: string; body?: string; error?: string; cookie?: string }>;

      // Custom header: the browser asks first (CORS preflight), token-handler does not agree, nothing is sent.
      expect(results.apiWithCsrfHeader?.error).toMatch(/TypeError|Failed to fetch/);
      // No header: token-handler refuses (403 csrf_failed), and the page may not even read that.
      expect(results.apiSimple?.error).toMatch(/TypeError|Failed to fetch/);
      expect(results.apiNoCors).toEqual({ status: 0, type: 'opaque', body: '' });
      expect(results.user?.error).toMatch(/TypeError|Failed to fetch/);
      expect(results.logout).toEqual({ status: 0, type: 'opaque', body: '' });
      // Same host, other port: cookies are shared, but the session cookie is HttpOnly.
      expect(results.documentCookie?.cookie).not.toContain(SESSION_COOKIE);
      expect(JSON.stringify(results)).not.toMatch(/alice|Hello/);

      await network.settled();
      const fromAttacker = network.all().filter((r) => new URL(r.url).origin === demo.publicUrl && r.url !== demo.url);
      // The preflight of the call with the custom header was refused…
      const preflights = fromAttacker.filter((r) => r.method === 'OPTIONS');
      expect(preflights.map((r) => `${new URL(r.url).pathname} ${r.status}`)).toEqual(['/api/hello 403']);
      // …and every call that reached token-handler without it was refused too.
      const apiAnswers = fromAttacker.filter((r) => r.method === 'GET' && new URL(r.url).pathname === '/api/hello');
      expect(apiAnswers.length).toBeGreaterThan(0);
      for (const answer of apiAnswers) {
        expect(answer.status).toBe(403);
        if (answer.body) expect(answer.body).toContain('csrf_failed');
      }
      const logoutAnswers = network.at('/auth/logout');
      expect(logoutAnswers.length).toBeGreaterThan(0);
      for (const answer of logoutAnswers) expect(answer.status).toBe(403);
      // The API never saw any of it.
      expect(demo.apiRequests().length).toBe(apiCallsBefore);

      // The user is still signed in: the cross-origin logout did nothing.
      await page.reload();
      await page.locator('#who[data-state="signed-in"]').waitFor();
      expect(await callApiFromPage(page)).toBe(200);
      await expectPageCannotSeeSessionCookie(page);
      await expectPageCannotSeeSessionCookie(evil);
      await expectNoTokenReachedTheBrowser();
    } finally {
      await attacker.close();
    }
  });
});

/** A hostile page that tries to use the visitor's session with token-handler. */
function attackerPage(target: string): string {
  return `<!DOCTYPE html><html><head><meta charset="utf-8"><title>cute cats</title></head><body><h1>Cute cats</h1><script>
(async () => {
  const target = ${JSON.stringify(target)};
  const results = {};
  async function attempt(name, url, init) {
    try {
      const response = await fetch(url, init);
      results[name] = { status: response.status, type: response.type, body: await response.text() };
    } catch (err) {
      results[name] = { error: String(err) };
    }
  }
  await attempt('apiWithCsrfHeader', target + '/api/hello', { credentials: 'include', headers: { 'x-csrf': '1' } });
  await attempt('apiSimple', target + '/api/hello', { credentials: 'include' });
  await attempt('apiNoCors', target + '/api/hello', { credentials: 'include', mode: 'no-cors' });
  await attempt('user', target + '/auth/user', { credentials: 'include' });
  await attempt('logout', target + '/auth/logout', { method: 'POST', credentials: 'include', mode: 'no-cors' });
  results.documentCookie = { cookie: document.cookie };
  window.results = results;
})();
</script></body></html>`;
}
