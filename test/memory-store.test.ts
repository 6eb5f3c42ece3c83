import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemorySessionStore } from '../src/state/memory/session-store.js';
import { startProvider, type TestProvider } from './support/provider.js';
import { REDIRECT_URI, SECRET, startBff, TestBrowser, type TestBff } from './support/bff.js';
import type { SessionRecord } from '../src/state/record.js';

const SESSION = '__Host-th_session';

function record(id: string, overrides: Partial<SessionRecord> = {}): SessionRecord {
  return {
    id,
    accessToken: 'at',
    tokenType: 'Bearer',
    accessTokenExpiresAt: 0,
    refreshToken: 'rt',
    claims: { sub: `user-${id}`, sid: `sid-${id}` },
    createdAt: 0,
    lastSeenAt: 0,
    ...overrides,
  };
}

describe('memory store', () => {
  it('forgets a record after its time to live and sweeps it away', async () => {
    let now = 0;
    const store = new MemorySessionStore(() => now, 60_000);
    await store.create(record('a'), 10);
    await store.create(record('b'), 100);
    now = 9_999;
    expect(await store.get('a')).not.toBeNull();
    now = 10_000;
    expect(await store.get('a')).toBeNull();
    await store.create(record('c'), 5);
    now = 20_000;
    expect(store.sweep()).toBe(1);
    expect(await store.count()).toBe(1);
    await store.close();
  });

  it('finds sessions by provider sid and by sub', async () => {
    const store = new MemorySessionStore(() => 0);
    await store.create(record('a'), 10);
    await store.create(record('b', { claims: { sub: 'user-a', sid: 'sid-b' } }), 10);
    expect(await store.findBySid('sid-b')).toEqual(['b']);
    expect((await store.findBySub('user-a')).sort()).toEqual(['a', 'b']);
    await store.close();
  });

  it('never writes spent tokens back over a record refreshed meanwhile', async () => {
    const store = new MemorySessionStore(() => 0);
    await store.create(record('a'), 10);
    expect(await store.update(record('a', { refreshedAt: 2_000, refreshToken: 'new' }), 10)).toBe('written');
    expect(await store.update(record('a', { refreshedAt: 1_000, refreshToken: 'old' }), 10)).toBe('stale');
    expect((await store.get('a'))?.refreshToken).toBe('new');
    await store.close();
  });

  it('never writes a deleted session back: a late update finds it ended', async () => {
    const store = new MemorySessionStore(() => 0);
    await store.create(record('a'), 10);
    expect((await store.delete('a'))?.id).toBe('a');
    expect(await store.update(record('a', { refreshedAt: 2_000 }), 10)).toBe('ended');
    expect(await store.get('a')).toBeNull();
    await store.close();
  });

  it('never writes an expired session back: an idle slide after the expiry finds it ended', async () => {
    let now = 0;
    const store = new MemorySessionStore(() => now);
    await store.create(record('a'), 10);
    now = 10_000;
    expect(await store.update(record('a', { lastSeenAt: 10_000 }), 10)).toBe('ended');
    expect(await store.get('a')).toBeNull();
    await store.close();
  });
});

describe('memory store behind token-handler', () => {
  let provider: TestProvider;
  let bff: TestBff;
  let now = Date.now();

  beforeAll(async () => {
    provider = await startProvider({ redirectUris: [REDIRECT_URI] });
    bff = await startBff(
      {
        oidc: { issuer: provider.issuer, clientId: provider.clients.basic.clientId, clientSecret: provider.clients.basic.clientSecret },
        session: { store: 'memory', secrets: [SECRET], idleTimeoutSeconds: 600 },
      },
      { now: () => now },
    );
  });

  afterAll(async () => {
    await bff.app.close();
    await provider.stop();
  });

  it('keeps only a sealed session id in the cookie, and the session works', async () => {
    const browser = new TestBrowser(bff.app);
    await browser.login();
    expect(browser.cookies.get(SESSION)!.length).toBeLessThan(300);
    expect((await browser.request('/auth/user', { csrf: false })).json().claims.sub).toBe('alice');
  });

  it('ends the session after the idle timeout', async () => {
    const browser = new TestBrowser(bff.app);
    await browser.login();
    now += 601_000;
    expect((await browser.request('/auth/user', { csrf: false })).statusCode).toBe(401);
  });

  it('refuses a captured cookie after logout', async () => {
    const browser = new TestBrowser(bff.app);
    await browser.login();
    const captured = browser.cookies.get(SESSION)!;
    await browser.request('/auth/logout', { method: 'POST' });
    const thief = new TestBrowser(bff.app);
    thief.cookies.set(SESSION, captured);
    expect((await thief.request('/auth/user', { csrf: false })).statusCode).toBe(401);
  });
});
