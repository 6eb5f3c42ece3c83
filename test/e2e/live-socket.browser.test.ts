/**
 * The demo page's live panel in a real browser: a WebSocket to `/api/live` through
 * token-handler (the helper's `openSocket`), fed by the demo API every second; a sign-out
 * in another tab closes it with 4401 session_ended within 2 s.
 */
import type { Browser, BrowserContext } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDemo, type DemoStack } from '../../src/demo/index.js';
import { HAS_CHROMIUM, launchChromium, NetworkLog, newContext, signIn, warnWhenNoChromium } from './support.js';

warnWhenNoChromium('test/e2e/live-socket.browser.test.ts');

describe.skipIf(!HAS_CHROMIUM)('the live WebSocket panel in a real browser', () => {
  let demo: DemoStack;
  let browser: Browser;
  let context: BrowserContext;

  beforeAll(async () => {
    [demo, browser] = await Promise.all([startDemo({ port: 0, accessTokenSeconds: 30, logLevel: 'silent' }), launchChromium()]);
    context = await newContext(browser);
  });

  afterAll(async () => {
    await context?.close();
    await browser?.close();
    await demo?.close();
  });

  it('ticks over a socket through token-handler, and is closed with 4401 within 2 s of a sign-out in another tab', async () => {
    const page = await context.newPage();
    const network = new NetworkLog(context);
    await network.intercept(page, demo.publicUrl);
    await signIn(page, demo, network);
    await page.locator('#live-status[data-state="open"]').waitFor({ timeout: 5000 });
    await expect.poll(async () => (await page.locator('#live-tick').textContent()) ?? '', { timeout: 5000 }).toMatch(/^tick \d+ for /);

    const other = await context.newPage();
    await other.goto(demo.url);
    await other.locator('#who[data-state="signed-in"]').waitFor();
    const signedOutAt = Date.now();
    await other.evaluate("fetch('/auth/logout', { method: 'POST', headers: { 'x-csrf': '1' } })");
    await page.locator('#live-status[data-state="ended"]').waitFor({ timeout: 2000 });
    const closedWithin = Date.now() - signedOutAt;
    console.log(`live panel: socket closed ${closedWithin} ms after the sign-out in the other tab`);
    expect(closedWithin).toBeLessThan(2000);
    expect(await page.locator('#live-status').textContent()).toBe('closed 4401 session_ended');
    // The page was told, and did not try again.
    await page.waitForTimeout(500);
    expect(await page.locator('#live-status').textContent()).toBe('closed 4401 session_ended');
  });
});
