/**
 * Real-browser end-to-end support: Debian's chromium driven by playwright-core, a
 * recorder of everything the browser received, token-leak and cookie checks, and the
 * demo's sign-in / sign-out through the provider's real pages.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { chromium, type Browser, type BrowserContext, type Page, type Response } from 'playwright-core';
import { expect } from 'vitest';
import type { DemoStack } from '../../src/demo/index.js';

/** What page scripts see, for `page.evaluate` callbacks (this project's TypeScript has no DOM lib). */
export interface PageGlobals {
  document: { cookie: string };
  location: { href: string };
}

/** Debian's package `chromium` installs it here; CHROMIUM_PATH points elsewhere. */
export const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
export const HAS_CHROMIUM = existsSync(CHROMIUM_PATH);

/** The session cookie's name on plain http (no __Host- prefix). */
export const SESSION_COOKIE = 'th_session';

/** Where screenshots go (gitignored). */
export const ARTIFACTS_DIR = new URL('../../test-artifacts/', import.meta.url);

/** Says, loudly, that a browser test file is skipped and why. */
export function warnWhenNoChromium(file: string): void {
  if (HAS_CHROMIUM) return;
  const line = '!'.repeat(100);
  console.warn(
    [
      '',
      line,
      `!!! SKIPPED: ${file} — real-browser end-to-end tests need Chromium at ${CHROMIUM_PATH}, which is missing.`,
      '!!! Install it with:  apt-get update && apt-get install -y chromium   (Debian package "chromium"),',
      '!!! or point CHROMIUM_PATH at a Chromium binary. Never `npx playwright install`.',
      line,
      '',
    ].join('\n'),
  );
}

export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM_PATH,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      '--disable-quic',
    ],
  });
}

/** A fresh browser profile (own cookies), each wait well inside vitest's 30 s per test. */
export async function newContext(browser: Browser): Promise<BrowserContext> {
  const context = await browser.newContext({ viewport: { width: 1100, height: 900 } });
  context.setDefaultTimeout(15_000);
  context.setDefaultNavigationTimeout(15_000);
  return context;
}

/** A fresh browser context and a page in it, every response of the demo's origin recorded (NetworkLog). */
export async function openWatchedPage(browser: Browser, demo: DemoStack): Promise<{ context: BrowserContext; network: NetworkLog; page: Page }> {
  const context = await newContext(browser);
  const network = new NetworkLog(context);
  const page = await context.newPage();
  await network.intercept(page, demo.publicUrl);
  return { context, network, page };
}

// ---------------------------------------------------------------------------------------
// What the browser received
// ---------------------------------------------------------------------------------------
export interface SeenResponse {
  method: string;
  url: string;
  status: number;
  headers: Array<{ name: string; value: string }>;
  /** The body as text; null when the browser kept none (redirects, aborted loads). */
  body: string | null;
}

const BODY_WAIT_MS = 3000;

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Records what the browser received, two ways:
 * - every response of every page of a context (Playwright's response events): status,
 *   all headers (with Set-Cookie) and, when the browser still has it, the body;
 * - for pages passed to `intercept()`, every response of the given origin paused on
 *   its way in (DevTools Fetch domain, response stage) so its body is read before the
 *   page can navigate away (a document's bodies go with it: the `/auth/logout` answer is
 *   followed at once by the navigation to the provider).
 * Leak scans look at both.
 */
export class NetworkLog {
  readonly responses: SeenResponse[] = [];
  readonly intercepted: SeenResponse[] = [];
  /** Every URL any page asked for. */
  readonly requested: string[] = [];
  private readonly pending = new Set<Promise<void>>();

  constructor(context: BrowserContext) {
    context.on('request', (request) => this.requested.push(request.url()));
    // An event stream (GET /auth/events) never ends: there is no whole body to wait for.
    context.on('response', (response) => {
      if (!isEventStream(response.headers()['content-type'])) this.track(this.capture(response));
    });
  }

  private track(work: Promise<void>): void {
    const tracked = work.finally(() => this.pending.delete(tracked));
    this.pending.add(tracked);
  }

  private async capture(response: Response): Promise<void> {
    const [headers, body] = await Promise.all([
      response.headersArray().catch(() => []),
      // Redirects and responses the browser refused to expose (CORS) have no body; a load
      // cut short by a navigation may never deliver one: give up after a while.
      withTimeout(response.body(), BODY_WAIT_MS).then(
        (bytes) => bytes.toString('utf8'),
        () => null,
      ),
    ]);
    this.responses.push({ method: response.request().method(), url: response.url(), status: response.status(), headers, body });
  }

  /** Holds each response from `origin` to this page until its body has been read. */
  async intercept(page: Page, origin: string): Promise<void> {
    const cdp = await page.context().newCDPSession(page);
    cdp.on('Fetch.requestPaused', (event) => {
      this.track(
        (async () => {
          const status = event.responseStatusCode ?? 0;
          let body: string | null = null;
          const type = event.responseHeaders?.find((h) => h.name.toLowerCase() === 'content-type')?.value;
          if (status !== 0 && !(status >= 300 && status < 400) && !isEventStream(type)) {
            try {
              const read = await cdp.send('Fetch.getResponseBody', { requestId: event.requestId });
              body = read.base64Encoded ? Buffer.from(read.body, 'base64').toString('utf8') : read.body;
            } catch {
              // no body (e.g. 204/304)
            }
          }
          this.intercepted.push({ method: event.request.method, url: event.request.url, status, headers: event.responseHeaders ?? [], body });
          await cdp.send('Fetch.continueRequest', { requestId: event.requestId }).catch(() => undefined);
        })(),
      );
    });
    await cdp.send('Fetch.enable', { patterns: [{ urlPattern: `${origin}/*`, requestStage: 'Response' }] });
  }

  /** Waits until every response seen so far has been read. */
  async settled(): Promise<void> {
    while (this.pending.size > 0) await Promise.all([...this.pending]);
  }

  /** Everything recorded, both ways. */
  all(): SeenResponse[] {
    return [...this.responses, ...this.intercepted];
  }

  /** Responses whose URL path is `pathname` (any origin, any query), both ways. */
  at(pathname: string): SeenResponse[] {
    return this.all().filter((r) => new URL(r.url).pathname === pathname);
  }

  /** Whether some record of this response (same method and URL) carries its body. */
  hasBody(response: SeenResponse): boolean {
    return this.all().some((r) => r.method === response.method && r.url === response.url && r.body !== null);
  }
}

export interface Leak {
  url: string;
  where: 'header' | 'body';
  token: string;
}

/** Every place a token appears in what the browser received. */
export function findTokens(responses: readonly SeenResponse[], tokens: readonly string[]): Leak[] {
  const leaks: Leak[] = [];
  for (const response of responses) {
    for (const token of tokens) {
      const short = `${token.slice(0, 12)}…`;
      if (response.headers.some((h) => h.value.includes(token))) leaks.push({ url: `${response.method} ${response.url}`, where: 'header', token: short });
      if (response.body?.includes(token)) leaks.push({ url: `${response.method} ${response.url}`, where: 'body', token: short });
    }
  }
  return leaks;
}

/** An ID token is the only JWT the provider issues here (its access and refresh tokens are opaque). */
export const isJwt = (token: string) => token.split('.').length === 3;

/**
 * No access, refresh or ID token the provider issued is in anything the browser
 * received (headers and bodies, every response recorded), nor, given `logText`, in
 * token-handler's logs. `signedIn: false` for scenarios that never sign in (then only
 * tokens of earlier scenarios, if any, are looked for).
 */
export async function expectNoTokenReached(
  network: NetworkLog,
  demo: DemoStack,
  options: { logText?: string; signedIn?: boolean } = {},
): Promise<void> {
  await network.settled();
  const issued = demo.issuedTokens();
  if (options.signedIn ?? true) {
    // Otherwise the scan below would prove nothing.
    expect(issued.filter(isJwt).length, 'the provider issued ID tokens').toBeGreaterThan(0);
    expect(issued.filter((t) => !isJwt(t)).length, 'the provider issued access and refresh tokens').toBeGreaterThan(0);
  }
  expect(findTokens(network.all(), issued)).toEqual([]);
  // Everything stays on this machine: no page asked anything of another host.
  expect(network.requested.filter((url) => !/^(https?:\/\/127\.0\.0\.1[:/]|data:|about:)/.test(url))).toEqual([]);

  // The scan saw the body of every answer of token-handler's /auth calls and of the API.
  for (const r of network.all()) {
    const url = new URL(r.url);
    if (url.origin === demo.publicUrl && /^\/(auth\/(user|refresh|logout)|api\/)/.test(url.pathname) && r.status !== 0) {
      expect(network.hasBody(r), `body of ${r.method} ${r.url} recorded`).toBe(true);
    }
  }
  if (options.logText !== undefined) {
    expect(findTokens([{ method: 'LOG', url: 'token-handler logs', status: 0, headers: [], body: options.logText }], issued)).toEqual([]);
  }
}

/** From inside the page: `document.cookie` shows no session cookie. */
export async function expectPageCannotSeeSessionCookie(page: Page): Promise<void> {
  const visible = await page.evaluate(() => (globalThis as unknown as PageGlobals).document.cookie);
  expect(visible).not.toContain(SESSION_COOKIE);
}

/** The browser does hold the session cookie, HttpOnly (so the check above is not vacuous). */
export async function expectHttpOnlySessionCookie(context: BrowserContext, demo: DemoStack): Promise<void> {
  const cookies = await context.cookies(demo.publicUrl);
  const session = cookies.find((c) => c.name === SESSION_COOKIE || c.name.startsWith(`${SESSION_COOKIE}.`));
  expect(session, 'the browser holds a session cookie').toBeDefined();
  expect(session?.httpOnly).toBe(true);
  expect(session?.sameSite).toBe('Strict');
}

// ---------------------------------------------------------------------------------------
// The demo, as a person uses it
// ---------------------------------------------------------------------------------------
const isProviderUrl = (demo: DemoStack) => (url: URL) => url.origin === demo.providerUrl;

/** From the demo page's "Sign in" through the provider's login and consent pages, back to the page. */
export async function signIn(page: Page, demo: DemoStack, network: NetworkLog, login = 'alice'): Promise<void> {
  await page.goto(demo.url);
  await page.locator('#who[data-state="signed-out"]').waitFor();
  // Read what the page received before it navigates away (a document's responses go with it).
  await network.settled();
  await page.getByRole('link', { name: 'Sign in' }).click();
  await completeProviderSignIn(page, demo, login);
  await page.waitForURL(demo.url);
  await page.locator('#who[data-state="signed-in"]').waitFor();
}

/** On the provider's pages: the devInteractions login form, then consent. */
export async function completeProviderSignIn(page: Page, demo: DemoStack, login = 'alice'): Promise<void> {
  await page.waitForURL(isProviderUrl(demo));
  await page.locator('input[name="login"]').fill(login);
  await page.locator('input[name="password"]').fill('any password will do');
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  await page.getByRole('button', { name: 'Allow and continue' }).click();
}

/** The demo page's "Sign out", then "Yes, sign me out" at the provider, back on the demo page. */
export async function signOut(page: Page, demo: DemoStack, network: NetworkLog): Promise<void> {
  await network.settled();
  await page.locator('#sign-out').click();
  await page.waitForURL(isProviderUrl(demo));
  await page.getByRole('button', { name: 'Yes, sign me out' }).click();
  // Back on the demo page (which drops the ?signed-out it came back with).
  await page.waitForURL((url) => url.origin === demo.publicUrl && url.pathname === '/');
  await page.locator('#who[data-state="signed-out"]').waitFor();
}

/** Clicks "Call /api/hello" and waits until the page shows the answer; returns its status. */
export async function callApiFromPage(page: Page): Promise<number> {
  const answered = page.waitForResponse((r) => new URL(r.url()).pathname === '/api/hello');
  await page.locator('#call-api').click();
  const response = await answered;
  await page.locator(`#api-status[data-status="${response.status()}"]`).waitFor();
  // After a successful call the page re-reads /auth/user; wait until the button is back.
  await page.locator('#call-api:not([disabled])').waitFor();
  return response.status();
}

export function screenshotPath(name: string): string {
  mkdirSync(ARTIFACTS_DIR, { recursive: true });
  return new URL(name, ARTIFACTS_DIR).pathname;
}

// ---------------------------------------------------------------------------------------
// A page on another origin
// ---------------------------------------------------------------------------------------
export interface OtherOrigin {
  url: string;
  /** Requests it received (method, path, headers). */
  requests: Array<{ method: string; path: string; headers: IncomingMessage['headers'] }>;
  close(): Promise<void>;
}

/**
 * A tiny site on 127.0.0.1 at another port (same site as token-handler — ports do not
 * separate sites — but another origin). Serves `html` at `/`, and at `/echo` answers
 * any origin (CORS `*`, no credentials) with `{ ok: true }`.
 */
export async function startOtherOrigin(html: string): Promise<OtherOrigin> {
  const requests: OtherOrigin['requests'] = [];
  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const path = new URL(req.url ?? '/', 'http://x.invalid').pathname;
    requests.push({ method: req.method ?? 'GET', path, headers: req.headers });
    req.resume();
    if (path === '/echo') {
      res.writeHead(200, {
        'content-type': 'application/json',
        'access-control-allow-origin': '*',
        'access-control-allow-headers': '*',
      });
      res.end('{"ok":true}');
      return;
    }
    if (path === '/') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end(html);
      return;
    }
    res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

function isEventStream(contentType: string | undefined): boolean {
  return contentType !== undefined && contentType.toLowerCase().startsWith('text/event-stream');
}
