/**
 * Route policies through the demo in a real browser: the admin-only route (/api/admin)
 * and the step-up route (/api/secure) on the demo page, and the browser helper's handling
 * of insufficient_claims and step_up_required.
 */
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startDemo, type DemoStack } from '../../src/demo/index.js';
import { DEMO_STRONG_ACR } from '../../src/demo/provider.js';
import { expectNoTokenReached, expectPageCannotSeeSessionCookie, HAS_CHROMIUM, launchChromium, NetworkLog, openWatchedPage, signIn, warnWhenNoChromium, type PageGlobals } from './support.js';

warnWhenNoChromium('test/e2e/route-policies.browser.test.ts');

interface HelperResponse {
  status: number;
  json(): Promise<Record<string, unknown>>;
}
type WithHelper = PageGlobals & {
  th: { createClient(options?: Record<string, unknown>): { fetch(input: string): Promise<HelperResponse> } };
  fetch: typeof fetch;
};

/** Clicks one of the demo page's API buttons and waits for the answer; returns its status. */
async function callFromPage(page: Page, button: string, path: string): Promise<number> {
  const answered = page.waitForResponse((r) => new URL(r.url()).pathname === path);
  await page.locator(button).click();
  return (await answered).status();
}

/** The session's creation time, as /auth/user tells the page: the same session keeps it. */
async function sessionCreatedAt(page: Page): Promise<string> {
  return page.evaluate(async () => {
    const response = await (globalThis as unknown as WithHelper).fetch('/auth/user');
    return ((await response.json()) as { session: { createdAt: string } }).session.createdAt;
  });
}

describe.skipIf(!HAS_CHROMIUM)('route policies on the demo page, in a real browser', () => {
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

  it('the admin-only API answers an admin, and shows anyone else 403 insufficient_claims without calling the API', async () => {
    await signIn(page, demo, network, 'admin-ann');
    expect(await callFromPage(page, '#call-admin', '/api/admin/hello')).toBe(200);
    await context.clearCookies();

    await signIn(page, demo, network, 'alice');
    const apiCalls = demo.apiRequests().length;
    expect(await callFromPage(page, '#call-admin', '/api/admin/hello')).toBe(403);
    await page.locator('#api-status[data-status="403"]').waitFor();
    expect(JSON.parse((await page.locator('#api-body').textContent()) ?? '{}')).toMatchObject({ error: 'insufficient_claims' });
    expect(page.url()).toBe(demo.url);
    expect(demo.apiRequests().length).toBe(apiCalls);
    await expectNoTokenReached(network, demo);
  });

  it('the step-up route sends the user to sign in again, and afterwards the same session reaches it', async () => {
    await signIn(page, demo, network, 'alice');
    const createdAt = await sessionCreatedAt(page);
    await network.settled();

    // The first call answers step_up_required: the helper navigates to the stronger sign-in.
    await page.locator('#call-secure').click();
    await page.waitForURL((url) => url.origin === demo.providerUrl);
    await page.locator('input[name="login"]').fill('alice');
    await page.locator('input[name="password"]').fill('any password will do');
    await page.getByRole('button', { name: 'Sign in', exact: true }).click();
    await page.waitForURL(demo.url);
    await page.locator('#who[data-state="signed-in"]').waitFor();

    await network.settled();
    const stepUp = network.at('/api/secure/hello').find((r) => r.body !== null);
    expect(stepUp?.status).toBe(401);
    expect(JSON.parse(stepUp!.body!)).toMatchObject({ error: 'step_up_required', acr_values: DEMO_STRONG_ACR });
    const stepUpLogins = network.at('/auth/login').filter((r) => new URL(r.url).searchParams.get('acr_values') === DEMO_STRONG_ACR);
    expect(stepUpLogins.length).toBeGreaterThan(0);
    expect(new URL(stepUpLogins[0]!.url).searchParams.get('returnTo')).toBe('/');

    expect(await callFromPage(page, '#call-secure', '/api/secure/hello')).toBe(200);
    expect(JSON.parse((await page.locator('#api-body').textContent()) ?? '{}')).toMatchObject({ sub: 'alice' });
    expect(await sessionCreatedAt(page)).toBe(createdAt);
    await expectPageCannotSeeSessionCookie(page);
    await expectNoTokenReached(network, demo);
  });

  it("with an onStepUpRequired hook the page stays put and learns what sign-in the route needs", async () => {
    await signIn(page, demo, network, 'alice');
    await page.evaluate("import('/auth/client.js').then((module) => { window.th = module; })");
    const outcome = await page.evaluate(async () => {
      const w = globalThis as unknown as WithHelper;
      const seen: unknown[] = [];
      const client = w.th.createClient({ onStepUpRequired: ({ loginUrl, acrValues }: { loginUrl: string; acrValues: string }) => seen.push({ loginUrl, acrValues }) });
      const response = await client.fetch('/api/secure/hello');
      return { status: response.status, body: await response.json(), seen, href: w.location.href };
    });
    expect(outcome.status).toBe(401);
    expect(outcome.body.error).toBe('step_up_required');
    expect(outcome.seen).toEqual([{ loginUrl: `/auth/login?acr_values=${encodeURIComponent(DEMO_STRONG_ACR)}&returnTo=%2F`, acrValues: DEMO_STRONG_ACR }]);
    expect(outcome.href).toBe(demo.url);
    await expectNoTokenReached(network, demo);
  });
});
