/**
 * The browser helper's `openSocket` (client/token-handler-client.js) against the real
 * token-handler and a real `ws` upstream, in Node: a `ws` WebSocket stands in for the
 * browser's (same event API), carrying the session cookie and the page's Origin as a
 * browser would; `location` and `fetch` are the page's.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket as NodeWebSocket } from 'ws';
import { createClient } from '../client/token-handler-client.js';
import { startProvider, type TestProvider } from './support/provider.js';
import { startWsUpstream, type WsUpstream } from './support/ws-upstream.js';
import { PUBLIC_URL, REDIRECT_URI, SECRET, startBff, TestBrowser, type TestBff } from './support/bff.js';

let provider: TestProvider;
let wsUpstream: WsUpstream;
let bff: TestBff;
let base: string;
const clock = { offsetMs: 0 };
const navigations: string[] = [];

beforeAll(async () => {
  provider = await startProvider({ redirectUris: [REDIRECT_URI] });
  wsUpstream = await startWsUpstream(provider);
  bff = await startBff(
    {
      oidc: { issuer: provider.issuer, clientId: provider.clients.basic.clientId, clientSecret: provider.clients.basic.clientSecret },
      session: { store: 'memory', secrets: [SECRET] },
      routes: [{ prefix: '/api/live', upstream: wsUpstream.url, websocket: true, closeOnTokenExpiry: true }],
    },
    { now: () => Date.now() + clock.offsetMs },
  );
  base = await bff.app.listen({ host: '127.0.0.1', port: 0 });
  const page = new URL('/dashboard', base);
  (globalThis as { location?: unknown }).location = {
    href: page.href,
    origin: page.origin,
    pathname: page.pathname,
    search: '',
    hash: '',
    assign: (url: string) => navigations.push(url),
  };
});

afterEach(() => {
  clock.offsetMs = 0;
  navigations.length = 0;
});

afterAll(async () => {
  delete (globalThis as { location?: unknown }).location;
  await bff.app.close();
  await wsUpstream.close();
  await provider.stop();
});

/** The page's browser: its cookie goes with every socket and fetch, with the page's Origin. */
function pageOf(browser: TestBrowser | null) {
  const cookie = () => (browser ? browser.cookieHeader() : '');
  class BrowserWebSocket extends NodeWebSocket {
    constructor(url: string, protocols?: string | string[]) {
      super(url, protocols, { headers: { cookie: cookie(), origin: PUBLIC_URL } });
      // A browser fires `error` then `close` (1006) for a refused upgrade; `ws` would throw an unheard error.
      this.on('error', () => undefined);
    }
  }
  const client = createClient({
    fetch: (input, init) => fetch(new URL(String(input), base), { ...init, headers: { ...(init?.headers as Record<string, string>), cookie: cookie() } }),
  });
  return { client, WebSocket: BrowserWebSocket as unknown as new (url: string) => WebSocket };
}

interface Seen {
  opens: number;
  messages: string[];
  closes: Array<{ code: number; reconnecting: boolean }>;
  ended: number;
}

function watch(): Seen & { options: Record<string, unknown> } {
  const seen: Seen = { opens: 0, messages: [], closes: [], ended: 0 };
  return {
    ...seen,
    get opens() {
      return seen.opens;
    },
    get ended() {
      return seen.ended;
    },
    options: {
      minDelayMs: 20,
      onOpen: () => seen.opens++,
      onMessage: (event: MessageEvent) => seen.messages.push(String(event.data)),
      onClose: (event: { code: number }, state: { reconnecting: boolean }) => seen.closes.push({ code: event.code, reconnecting: state.reconnecting }),
      onSessionEnded: () => seen.ended++,
    },
  };
}

describe('openSocket', () => {
  it('reconnects after 4001 token_expired with a fresh token, and stops on 4401 session_ended', async () => {
    const browser = new TestBrowser(bff.app);
    await browser.login({ login: 'client-socket' });
    const { client, WebSocket } = pageOf(browser);
    const seen = watch();
    const upgradesBefore = wsUpstream.upgrades.length;
    const live = client.openSocket('/api/live/echo', { ...seen.options, WebSocket });
    await expect.poll(() => seen.opens).toBe(1);
    expect(live.send('hello')).toBe(true);
    await expect.poll(() => seen.messages).toEqual(['hello']);
    clock.offsetMs += 61_000;
    await expect.poll(() => seen.closes[0], { timeout: 3000 }).toEqual({ code: 4001, reconnecting: true });
    await expect.poll(() => seen.opens, { timeout: 3000 }).toBe(2);
    // The new upgrade was refreshed first: a new token upstream. (The page may count the
    // second open before the upstream has recorded its upgrade.)
    await expect.poll(() => wsUpstream.upgrades.length - upgradesBefore).toBe(2);
    const [before, after] = wsUpstream.upgrades.slice(upgradesBefore);
    expect(after!.headers.authorization).not.toBe(before!.headers.authorization);
    clock.offsetMs = 0;
    expect((await browser.request('/auth/logout', { method: 'POST' })).statusCode).toBeLessThan(400);
    await expect.poll(() => seen.closes.at(-1), { timeout: 2000 }).toEqual({ code: 4401, reconnecting: false });
    expect(seen.ended).toBe(1);
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(seen.opens).toBe(2);
  });

  it('a refused upgrade (1006 before open) of a signed-out page goes to sign in instead of retrying', async () => {
    const { client, WebSocket } = pageOf(null);
    const seen = watch();
    const options = { ...seen.options, onSessionEnded: undefined, WebSocket };
    client.openSocket('/api/live/echo', options);
    await expect.poll(() => navigations, { timeout: 3000 }).toEqual(['/auth/login?returnTo=%2Fdashboard']);
    expect(seen.opens).toBe(0);
    expect(seen.closes).toEqual([{ code: 1006, reconnecting: false }]);
  });

  it('close() ends it for good', async () => {
    const browser = new TestBrowser(bff.app);
    await browser.login({ login: 'client-socket-close' });
    const { client, WebSocket } = pageOf(browser);
    const seen = watch();
    const live = client.openSocket('/api/live/echo', { ...seen.options, WebSocket });
    await expect.poll(() => seen.opens).toBe(1);
    live.close();
    await expect.poll(() => seen.closes).toEqual([{ code: 1000, reconnecting: false }]);
  });
});
