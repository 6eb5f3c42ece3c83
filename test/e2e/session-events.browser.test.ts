/**
 * Every tab told at once: two tabs of one browser on the demo's page, both listening through
 * the browser helper's `onSessionEvent` (one `/auth/events` stream shared over a
 * BroadcastChannel); the user signs out in one tab and the other learns it without making
 * any API call.
 */
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDemo, type DemoStack } from '../../src/demo/index.js';
import { HAS_CHROMIUM, launchChromium, NetworkLog, newContext, signIn, warnWhenNoChromium } from './support.js';

warnWhenNoChromium('test/e2e/session-events.browser.test.ts');

interface Listening {
  sessionEvents: Array<{ type: string; reason?: string; at: number }>;
}

/** Loads the helper into the page and records every session event it hears. */
async function listen(page: Page): Promise<void> {
  await page.evaluate(
    "import('/auth/client.js').then((th) => { window.sessionEvents = []; th.onSessionEvent((e) => window.sessionEvents.push({ ...e, at: Date.now() })); })",
  );
}

describe.skipIf(!HAS_CHROMIUM)('session events in a real browser', () => {
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

  it('a sign-out in one tab reaches the other tab within 2 s, with no API call from it', async () => {
    const first = await context.newPage();
    const network = new NetworkLog(context);
    await network.intercept(first, demo.publicUrl);
    await signIn(first, demo, network);
    const second = await context.newPage();
    await second.goto(demo.url);
    await second.locator('#who[data-state="signed-in"]').waitFor();
    await listen(first);
    await listen(second);
    // One tab holds the stream; give it a moment to open before the end comes.
    await second.waitForTimeout(500);
    const calls: string[] = [];
    second.on('request', (request) => {
      if (new URL(request.url()).pathname.startsWith('/api/')) calls.push(request.url());
    });

    const signedOutAt = Date.now();
    await first.evaluate("fetch('/auth/logout', { method: 'POST', headers: { 'x-csrf': '1' } })");
    await expect
      .poll(() => second.evaluate('window.sessionEvents.find((e) => e.type === "session-ended") ?? null') as Promise<Listening['sessionEvents'][number] | null>, { timeout: 2000, interval: 50 })
      .toMatchObject({ type: 'session-ended', reason: 'logout' });
    const ended = (await second.evaluate('window.sessionEvents.find((e) => e.type === "session-ended")')) as { at: number };
    expect(ended.at - signedOutAt).toBeLessThan(2000);
    expect(calls).toEqual([]);
  });
});
