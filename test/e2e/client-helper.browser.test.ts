/**
 * The browser helper (`/auth/client.js`, `token-handler/client`) in a real browser,
 * on the demo's pages: CSRF header and cookie on our own API calls only, sign-in when
 * the session is missing (or the page's own handler), the session view, logout.
 * Every scenario also checks that the page sees no session cookie and that no token
 * reached the browser.
 */
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { SessionView } from '../../client/token-handler-client.js';
import { startDemo, type DemoStack } from '../../src/demo/index.js';
import { completeProviderSignIn, expectNoTokenReached, expectPageCannotSeeSessionCookie, HAS_CHROMIUM, launchChromium, NetworkLog, openWatchedPage, signIn, startOtherOrigin, warnWhenNoChromium, type PageGlobals } from './support.js';

warnWhenNoChromium('test/e2e/client-helper.browser.test.ts');

/** The helper's module as a page script sees it, once `loadHelper` has put it on `window.th`. */
interface HelperModule {
  createClient(options?: Record<string, unknown>): {
    fetch(input: string, init?: Record<string, unknown>): Promise<{ status: number; json(): Promise<Record<string, unknown>>; text(): Promise<string> }>;
    getUser(): Promise<SessionView | null>;
    refresh(): Promise<SessionView | null>;
    logout(): Promise<{ logoutUrl: string | null }>;
    loginUrl(returnTo?: string): string;
  };
  apiFetch(input: string, init?: Record<string, unknown>): Promise<{ status: number; json(): Promise<Record<string, unknown>> }>;
  getUser(): Promise<SessionView | null>;
  refresh(): Promise<SessionView | null>;
  logout(): Promise<{ logoutUrl: string | null }>;
}
type WithHelper = PageGlobals & { th: HelperModule; fetch: typeof fetch };

/**
 * Imports /auth/client.js into the page as `window.th`. (A string, so the import runs in
 * the browser: vitest rewrites `import()` in functions it compiles.)
 */
async function loadHelper(page: Page): Promise<void> {
  await page.evaluate("import('/auth/client.js').then((module) => { window.th = module; })");
}

describe.skipIf(!HAS_CHROMIUM)('the browser helper in a real browser', () => {
  let demo: DemoStack;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  let network: NetworkLog;

  beforeAll(async () => {
    [demo, browser] = await Promise.all([startDemo({ port: 0, accessTokenSeconds: 30, logLevel: 'silent' }), launchChromium()]);
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

  it('a signed-out visitor whose API call needs a session is sent to sign in, and comes back to the same page, query and fragment', async () => {
    await page.goto(`${demo.url}?tab=orders#latest`);
    await page.locator('#who[data-state="signed-out"]').waitFor();
    await loadHelper(page);
    await network.settled();

    // Not awaited: the page navigates away while the call resolves.
    await page.evaluate(() => {
      void (globalThis as unknown as WithHelper).th.apiFetch('/api/hello');
    });
    await completeProviderSignIn(page, demo, 'bob');
    await page.waitForURL(`${demo.url}?tab=orders#latest`);
    await page.locator('#who[data-state="signed-in"]').waitFor();
    expect(await page.locator('#user-sub').textContent()).toBe('bob');

    const login = network.all().find((r) => new URL(r.url).pathname === '/auth/login');
    expect(new URL(login!.url).searchParams.get('returnTo')).toBe('/?tab=orders#latest');
    await expectPageCannotSeeSessionCookie(page);
    await expectNoTokenReached(network, demo);
  });

  it('with an onLoginRequired handler the page stays put, and the call resolves with the 401 login_required', async () => {
    await page.goto(`${demo.url}?x=1`);
    await page.locator('#who[data-state="signed-out"]').waitFor();
    await loadHelper(page);

    const outcome = await page.evaluate(async () => {
      const w = globalThis as unknown as WithHelper;
      const seen: string[] = [];
      const client = w.th.createClient({ onLoginRequired: ({ loginUrl }: { loginUrl: string }) => seen.push(loginUrl) });
      const response = await client.fetch('/api/hello');
      return { status: response.status, body: await response.json(), seen, href: w.location.href, user: await client.getUser() };
    });
    expect(outcome.status).toBe(401);
    expect(outcome.body.error).toBe('login_required');
    expect(outcome.seen).toEqual(['/auth/login?returnTo=%2F%3Fx%3D1']);
    expect(outcome.href).toBe(`${demo.url}?x=1`);
    expect(outcome.user).toBeNull();
    // Nothing was asked of the provider.
    expect(network.all().some((r) => new URL(r.url).origin === demo.providerUrl)).toBe(false);
    await expectPageCannotSeeSessionCookie(page);
    await expectNoTokenReached(network, demo, { signedIn: false });
  });

  it('signed in, its calls carry the CSRF header and the cookie, so token-handler forwards them; a bare fetch is refused with 403 csrf_failed', async () => {
    await signIn(page, demo, network);
    await loadHelper(page);

    const outcome = await page.evaluate(async () => {
      const w = globalThis as unknown as WithHelper;
      const viaHelper = await w.th.apiFetch('/api/hello');
      const bare = await w.fetch('/api/hello');
      const user = await w.th.getUser();
      const refreshed = await w.th.refresh();
      return { helper: { status: viaHelper.status, body: await viaHelper.json() }, bare: { status: bare.status, body: await bare.json() }, user, refreshed };
    });
    expect(outcome.helper.status).toBe(200);
    expect(outcome.helper.body.sub).toBe('alice');
    expect(outcome.bare).toEqual({ status: 403, body: expect.objectContaining({ error: 'csrf_failed' }) });
    // The session view: claims and times, exactly the documented keys, never a token.
    expect(outcome.user?.claims.sub).toBe('alice');
    expect(Object.keys(outcome.user?.session ?? {}).sort()).toEqual(
      ['absoluteExpiresAt', 'accessTokenExpiresAt', 'createdAt', 'idleExpiresAt', 'lastSeenAt', 'refreshedAt', 'scope'].sort(),
    );
    expect(outcome.user?.session.refreshedAt).toBeNull();
    expect(outcome.refreshed?.session.refreshedAt).not.toBeNull();
    await expectPageCannotSeeSessionCookie(page);
    await expectNoTokenReached(network, demo);
  });

  it('sends the CSRF header to its own origin only, so calls to another origin stay simple requests', async () => {
    const other = await startOtherOrigin('<!DOCTYPE html><title>other</title>');
    try {
      // A same-origin document without the demo page's CSP (its connect-src 'self' would stop the call).
      await page.goto(`${demo.publicUrl}/healthz`);
      await loadHelper(page);
      const body = await page.evaluate(async (url) => {
        const response = await (globalThis as unknown as WithHelper).th.apiFetch(url);
        return response.json();
      }, `${other.url}/echo`);
      expect(body).toEqual({ ok: true });
      expect(other.requests.map((r) => `${r.method} ${r.path}`)).toEqual(['GET /echo']);
      expect(other.requests[0]?.headers['x-csrf']).toBeUndefined();
      expect(other.requests[0]?.headers.cookie).toBeUndefined();
      await expectPageCannotSeeSessionCookie(page);
      await expectNoTokenReached(network, demo, { signedIn: false });
    } finally {
      await other.close();
    }
  });

  it('logout() without a session still ends cleanly and lands on the home page', async () => {
    await page.goto(`${demo.url}?from=somewhere`);
    await page.locator('#who[data-state="signed-out"]').waitFor();
    await loadHelper(page);
    await network.settled();
    await page.evaluate(() => {
      void (globalThis as unknown as WithHelper).th.logout();
    });
    await page.waitForURL(demo.url);
    const logout = network.at('/auth/logout').find((r) => r.body);
    expect(logout?.status).toBe(200);
    expect(JSON.parse(logout!.body!)).toEqual({ logoutUrl: null });
    await expectPageCannotSeeSessionCookie(page);
    await expectNoTokenReached(network, demo, { signedIn: false });
  });
});
