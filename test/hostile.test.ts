/**
 * Hostile input (issue 9): crafted and random cookies, sign-in responses, returnTo values,
 * header injection attempts, route-prefix escapes, odd methods and oversized requests.
 *
 * Every case asserts the same contract: a 4xx JSON `{error, error_description}` with no
 * stack trace and no token, the process keeps serving, every other session keeps working
 * (a bystander session calls the API throughout each describe block), and the victim's
 * own session is intact where it should be. The API route proxies `/api/*` to
 * `<upstream>/v1/*`, and the upstream must never see a path outside `/v1`.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config/load.js';
import { Sealer } from '../src/state/sealer.js';
import { PUBLIC_URL, REDIRECT_URI, SECRET, startBff, TestBrowser, type TestBff } from './support/bff.js';
import { completeProviderLogin } from './support/browser.js';
import { Bystander, expectErrorAnswer, expectNoInjectedHeader, fromInject, fromRaw, insidePrefix, isClearing, rawHttp, rawRequest, rawTranscripts, setCookiesOf, type RawResponse } from './support/hostile.js';
import { startProvider, type TestProvider } from './support/provider.js';
import { startUpstream, type EchoBody, type Upstream } from './support/upstream.js';

const SESSION = '__Host-th_session';
const PENDING = `${SESSION}_login.`;
const BODY_LIMIT = 65_536;
const HEADER_LIMIT = 8_192;
const OTHER_SECRET = 'another-secret-another-secret-another-0001';
const BIG_BIO = 'b'.repeat(6000);

interface Target {
  bff: TestBff;
  port: number;
}

let provider: TestProvider;
let upstream: Upstream;
/** `store: cookie` (the default) and `store: memory`, both listening on 127.0.0.1 for raw requests. */
let cookieStore: Target;
let memoryStore: Target;
const started: TestBff[] = [];
const bystanderTranscripts: string[] = [];

/** The rate limits on /auth/login and /auth/callback (where configured) would hide what these tests look at. */
function rateLimitOff(): Record<string, unknown> {
  const off = { rateLimit: { enabled: false } };
  try {
    parseConfig({ publicUrl: PUBLIC_URL, oidc: { issuer: 'http://127.0.0.1:1', clientId: 'c', clientSecret: 's' }, session: { secrets: [SECRET] }, ...off });
    return off;
  } catch {
    return {};
  }
}

async function startTarget(store: 'cookie' | 'memory'): Promise<Target> {
  const bff = await startBff({
    oidc: { issuer: provider.issuer, clientId: provider.clients.basic.clientId, clientSecret: provider.clients.basic.clientSecret },
    session: { secrets: [SECRET], store },
    routes: [{ prefix: '/api', upstream: `${upstream.url}/v1` }],
    limits: { bodyLimitBytes: BODY_LIMIT, headerLimitBytes: HEADER_LIMIT },
    ...rateLimitOff(),
  });
  started.push(bff);
  await bff.app.listen({ port: 0, host: '127.0.0.1' });
  const address = bff.app.server.address();
  if (address === null || typeof address === 'string') throw new Error('not listening');
  return { bff, port: address.port };
}

beforeAll(async () => {
  provider = await startProvider({ redirectUris: [REDIRECT_URI], accounts: { 'big-claims': { bio: BIG_BIO } } });
  upstream = await startUpstream({
    introspectionEndpoint: provider.endpoints.introspection,
    clientId: provider.clients.api.clientId,
    clientSecret: provider.clients.api.clientSecret,
  });
  cookieStore = await startTarget('cookie');
  memoryStore = await startTarget('memory');
});

afterAll(async () => {
  for (const bff of started) await bff.app.close();
  await upstream?.close();
  await provider?.stop();
});

afterAll(() => {
  // The route prefix held: the upstream only ever saw paths inside /v1.
  const outside = upstream.requests.map((r) => r.url).filter((url) => !insidePrefix(url));
  expect(outside, 'upstream paths outside /v1').toEqual([]);
  // What arrived over raw sockets and the bystanders' network calls never carried a token.
  const tokens = provider.issuedTokens().filter((t) => t.length >= 16);
  const received = [...rawTranscripts, ...bystanderTranscripts].join('\n');
  for (const token of tokens) expect(received.includes(token), `a token (${token.slice(0, 8)}…) reached the browser side`).toBe(false);
});

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

async function signedIn(target: Target, login: string): Promise<TestBrowser> {
  const browser = new TestBrowser(target.bff.app);
  const callback = await browser.login({ login });
  expect(callback.statusCode, callback.body).toBe(302);
  return browser;
}

/** Session cookies of a browser (whole or chunks), as one Cookie header. */
function sessionCookieHeader(browser: TestBrowser): string {
  return [...browser.cookies]
    .filter(([name]) => name === SESSION || name.startsWith(`${SESSION}.`))
    .map(([name, value]) => `${name}=${value}`)
    .join('; ');
}

/**
 * Starts a bystander on each target in beforeAll (each signed in as its own user) and, in
 * afterAll, requires that every one of its calls succeeded.
 */
function bystanders(name: string, targets: () => Target[]): void {
  const running: Bystander[] = [];
  beforeAll(async () => {
    let n = 0;
    for (const target of targets()) {
      const sub = `bystander-${name}-${n++}`;
      running.push(new Bystander(await signedIn(target, sub), sub, target.port));
    }
  });
  afterAll(async () => {
    for (const bystander of running) {
      const report = await bystander.stop();
      bystanderTranscripts.push(...bystander.received);
      expect(report.failures, `bystander calls that failed during "${name}"`).toEqual([]);
      expect(report.calls).toBeGreaterThan(0);
    }
  });
}

/** The victim's own cookies still open their session: /auth/user answers 200 for them. */
async function expectSessionIntact(prober: TestBrowser, cookieHeader: string, sub: string): Promise<void> {
  const user = await prober.request('/auth/user', { csrf: false, headers: { cookie: cookieHeader } });
  expect(user.statusCode, `victim session: ${user.body}`).toBe(200);
  expect(user.json<{ claims: { sub: string } }>().claims.sub).toBe(sub);
}

/** An answer to a hostile cookie: 401 login_required, and any Set-Cookie only clears. */
function expectNoSession(response: { statusCode: number; body: string; headers: Record<string, unknown> }, context: string): void {
  const json = expectErrorAnswer(fromInject(response), [401], context);
  expect(json.error, context).toBe('login_required');
  for (const cookie of setCookiesOf(response)) expect(isClearing(cookie), `${context}: sets ${cookie.slice(0, 80)}`).toBe(true);
}

function cookieHeaderOfRaw(response: RawResponse): string {
  return (response.headers['set-cookie'] ?? []).map((c) => c.split(';', 1)[0]!).join('; ');
}

/** Characters a header value can carry on the wire (Node refuses CR, LF, NUL and other controls). */
const headerChar = fc.oneof(
  { weight: 8, arbitrary: fc.integer({ min: 0x20, max: 0x7e }) },
  { weight: 1, arbitrary: fc.constant(0x09) },
  { weight: 1, arbitrary: fc.integer({ min: 0x80, max: 0xff }) },
).map((code) => String.fromCharCode(code));
const headerString = (maxLength: number, minLength = 0) => fc.string({ unit: headerChar, minLength, maxLength });
const SEAL_ALPHABET = [...'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_*~.'];

// ---------------------------------------------------------------------------------------------
// Cookies
// ---------------------------------------------------------------------------------------------

describe.each([
  ['cookie', () => cookieStore],
  ['memory', () => memoryStore],
] as const)('hostile session cookies (%s store)', (store, target) => {
  bystanders(`cookies-${store}`, () => [target()]);

  let victim: TestBrowser;
  let victimCookie: string;
  let attacker: TestBrowser;
  const victimSub = `victim-${store}`;

  beforeAll(async () => {
    victim = await signedIn(target(), victimSub);
    victimCookie = victim.cookies.get(SESSION)!;
    expect(victimCookie).toBeDefined();
    attacker = new TestBrowser(target().bff.app);
  });

  const victimIntact = () => expectSessionIntact(attacker, `${SESSION}=${victimCookie}`, victimSub);

  it('random cookie values get 401 login_required on /auth/user, /auth/refresh and /api, and the real session still works', async () => {
    await fc.assert(
      fc.asyncProperty(headerString(600), fc.constantFrom('GET /auth/user', 'GET /api/orders', 'POST /auth/refresh'), async (value, route) => {
        const [method, path] = route.split(' ') as ['GET' | 'POST', string];
        const response = await attacker.request(path, { method, headers: { cookie: `${SESSION}=${value}` } });
        expectNoSession(response, `${path} with ${JSON.stringify(value.slice(0, 80))}`);
        await victimIntact();
      }),
      { numRuns: 200 },
    );
  });

  it('a real sealed cookie with one character flipped is no session, and the original still works', async () => {
    await fc.assert(
      fc.asyncProperty(fc.nat(), fc.constantFrom(...SEAL_ALPHABET), fc.constantFrom('/auth/user', '/api/orders'), async (at, char, path) => {
        const index = at % victimCookie.length;
        fc.pre(victimCookie[index] !== char);
        const flipped = `${victimCookie.slice(0, index)}${char}${victimCookie.slice(index + 1)}`;
        expectNoSession(await attacker.request(path, { headers: { cookie: `${SESSION}=${flipped}` } }), `flip at ${index} to ${char}`);
        await victimIntact();
      }),
      { numRuns: 200 },
    );
  });

  it('a real sealed cookie cut short (either end) is no session', async () => {
    await fc.assert(
      fc.asyncProperty(fc.nat(), fc.boolean(), async (at, fromStart) => {
        const cut = at % victimCookie.length;
        const truncated = fromStart ? victimCookie.slice(0, cut) : victimCookie.slice(cut + 1);
        expectNoSession(await attacker.request('/auth/user', { csrf: false, headers: { cookie: `${SESSION}=${truncated}` } }), `cut at ${cut}`);
      }),
      { numRuns: 150 },
    );
    await victimIntact();
  });

  it('the victim’s own record sealed with another secret is no session (while the same record under our secret is)', async () => {
    const sealed = await new Sealer([SECRET]).unseal<Record<string, unknown>>(victimCookie);
    expect(sealed).not.toBeNull();
    const forged = await new Sealer([OTHER_SECRET]).seal(sealed!, 3600);
    expectNoSession(await attacker.request('/auth/user', { csrf: false, headers: { cookie: `${SESSION}=${forged}` } }), 'other secret');
    expectNoSession(await attacker.request('/api/orders', { headers: { cookie: `${SESSION}=${forged}` } }), 'other secret');
    const control = await new Sealer([SECRET]).seal(sealed!, 3600);
    await expectSessionIntact(attacker, `${SESSION}=${control}`, victimSub);
  });

  it('valid seals (right secret) of random values that are not a session are no session', async () => {
    const sealer = new Sealer([SECRET]);
    await fc.assert(
      fc.asyncProperty(fc.oneof(fc.object(), fc.array(fc.jsonValue(), { minLength: 1 }), fc.record({ sid: fc.jsonValue() }), fc.record({ id: fc.string(), claims: fc.object() })), async (value) => {
        const sealed = await sealer.seal(value as object, 3600);
        expectNoSession(await attacker.request('/api/orders', { headers: { cookie: `${SESSION}=${sealed}` } }), JSON.stringify(value).slice(0, 120));
      }),
      { numRuns: 150 },
    );
    await victimIntact();
  });

  it('valid seals of look-alikes are no session: a pending login, a session pointer to nobody, a record with a field of the wrong type', async () => {
    const sealer = new Sealer([SECRET]);
    const login = new TestBrowser(target().bff.app);
    await login.startLogin('/');
    const pendingSeal = [...login.cookies].find(([name]) => name.startsWith(PENDING))![1];
    const record = (await sealer.unseal<Record<string, unknown>>(victimCookie))!;
    const lookAlikes: Array<[string, string]> = [
      ['pending login', pendingSeal],
      ['pointer to no record', await sealer.seal({ sid: 'AAAAAAAAAAAAAAAAAAAAAAAA' }, 3600)],
      ['pointer with a number', await sealer.seal({ sid: 42 }, 3600)],
      ['admin claim', await sealer.seal({ sub: 'admin', admin: true }, 3600)],
      ['empty object', await sealer.seal({}, 3600)],
    ];
    if (store === 'cookie') {
      for (const field of ['id', 'accessToken', 'tokenType', 'accessTokenExpiresAt', 'createdAt', 'lastSeenAt', 'claims']) {
        const wrong = typeof record[field] === 'number' ? String(record[field]) : typeof record[field] === 'string' ? 1 : 'not-an-object';
        lookAlikes.push([`${field} missing`, await sealer.seal({ ...record, [field]: undefined }, 3600)]);
        lookAlikes.push([`${field} null`, await sealer.seal({ ...record, [field]: null }, 3600)]);
        lookAlikes.push([`${field} of the wrong type`, await sealer.seal({ ...record, [field]: wrong }, 3600)]);
      }
    }
    for (const [name, sealed] of lookAlikes) {
      expectNoSession(await attacker.request('/auth/user', { csrf: false, headers: { cookie: `${SESSION}=${sealed}` } }), name);
      expectNoSession(await attacker.request('/api/orders', { headers: { cookie: `${SESSION}=${sealed}` } }), name);
    }
    await victimIntact();
  });

  it('cookie values with ;, =, quotes, broken percent-encoding, encoded CRLF or iron look-alikes are no session', async () => {
    const values = [
      'a;b',
      'a=b=c',
      `=${victimCookie}`,
      `x${victimCookie}`,
      '%',
      '%E0%A4%A',
      '%0d%0aSet-Cookie:%20pwn=1',
      `${victimCookie.slice(0, 20)}%2A${victimCookie.slice(21)}`,
      `${victimCookie.slice(0, 40)};${victimCookie.slice(40)}`,
      `${victimCookie.slice(0, 40)}=${victimCookie.slice(40)}`,
      'Fe26.2**~2',
      'Fe26.2*1*a*b*c*1e999*d*e~2',
      `Fe26.2${'*'.repeat(500)}~2`,
      victimCookie.replace('~2', '~3'),
      victimCookie.replace('~2', ''),
      'é☃',
    ];
    for (const value of values) {
      expectNoSession(await attacker.request('/auth/user', { csrf: false, headers: { cookie: `${SESSION}=${value}` } }), JSON.stringify(value.slice(0, 60)));
    }
    await victimIntact();
  });

  it('decorations around a real seal (quotes, trailing ;, =, NUL or version garbage) yield that session or none, never another', async () => {
    // iron-session ignores what follows the `~2` version suffix: harmless, the MAC covers everything before it.
    for (const value of [`${victimCookie};`, `"${victimCookie}"`, `${victimCookie}=`, `${victimCookie}%00`, `${victimCookie}~2`, ` ${victimCookie} `]) {
      const response = await attacker.request('/auth/user', { csrf: false, headers: { cookie: `${SESSION}=${value}` } });
      if (response.statusCode === 200) expect(response.json<{ claims: { sub: string } }>().claims.sub).toBe(victimSub);
      else expectNoSession(response, JSON.stringify(value.slice(-20)));
    }
    await victimIntact();
  });

  it('a unicode (UTF-8) cookie value sent over the wire is no session', async () => {
    for (const value of ['é☃😀', `${victimCookie.slice(0, 30)}é${victimCookie.slice(30)}`, '\u2028\u2029']) {
      const response = await rawHttp(target().port, rawRequest('GET', '/auth/user', [['Cookie', Buffer.from(`${SESSION}=${value}`, 'utf8').toString('latin1')]]));
      expect(expectErrorAnswer(fromRaw(response), [401], value.slice(0, 20)).error).toBe('login_required');
      expectNoInjectedHeader(response);
    }
    await victimIntact();
  });

  it('duplicate session cookie names never mix two sessions: one of them, or none', async () => {
    const other = await signedIn(target(), `other-${store}`);
    const otherCookie = other.cookies.get(SESSION)!;
    const candidates = fc.constantFrom(`${SESSION}=${victimCookie}`, `${SESSION}=${otherCookie}`, `${SESSION}=garbage`, `${SESSION}=`, `${SESSION}.0=garbage`, `${SESSION}.1=${victimCookie}`);
    await fc.assert(
      fc.asyncProperty(fc.array(candidates, { minLength: 2, maxLength: 5 }), async (pairs) => {
        const cookie = pairs.join('; ');
        const user = await attacker.request('/auth/user', { csrf: false, headers: { cookie } });
        const api = await attacker.request('/api/orders', { headers: { cookie } });
        if (user.statusCode === 200) {
          const sub = user.json<{ claims: { sub: string } }>().claims.sub;
          expect([victimSub, `other-${store}`]).toContain(sub);
          // The API call of the same cookies acts for the same user, with that user's token.
          expect(api.statusCode).toBe(200);
          expect(api.json<EchoBody>().sub).toBe(sub);
        } else {
          expectNoSession(user, cookie.slice(0, 120));
          expectNoSession(api, cookie.slice(0, 120));
        }
      }),
      { numRuns: 100 },
    );
    await victimIntact();
    await expectSessionIntact(attacker, `${SESSION}=${otherCookie}`, `other-${store}`);
  });

  it('huge garbage cookies (3.9 KB, 16 KB, 41 chunks of 3.8 KB) are no session, and every chunk sent is cleared', async () => {
    for (const size of [3900, 16_000]) {
      expectNoSession(await attacker.request('/auth/user', { csrf: false, headers: { cookie: `${SESSION}=${'A'.repeat(size)}` } }), `${size} bytes`);
    }
    const names = Array.from({ length: 41 }, (_, i) => `${SESSION}.${i}`);
    const response = await attacker.request('/api/orders', { headers: { cookie: names.map((n, i) => `${n}=${String(i % 10).repeat(3800)}`).join('; ') } });
    expectNoSession(response, '41 chunks');
    const cleared = setCookiesOf(response).map((c) => c.split('=', 1)[0]);
    for (const name of names) expect(cleared, `chunk ${name} not cleared`).toContain(name);
    await victimIntact();
  });

  it('a garbage cookie just under the header limit over the wire gets 401 login_required, not a 5xx', async () => {
    const value = 'A'.repeat(HEADER_LIMIT - 400);
    const response = await rawHttp(target().port, rawRequest('GET', '/auth/user', [['Cookie', `${SESSION}=${value}`]]));
    expect(expectErrorAnswer(fromRaw(response), [401]).error).toBe('login_required');
    await victimIntact();
  });
});

describe('hostile chunked session cookies (cookie store)', () => {
  bystanders('chunks', () => [cookieStore]);

  let chunks: Array<[string, string]>;
  let attacker: TestBrowser;

  beforeAll(async () => {
    const victim = await signedIn(cookieStore, 'big-claims');
    chunks = [...victim.cookies].filter(([name]) => name.startsWith(`${SESSION}.`));
    expect(chunks.length).toBeGreaterThanOrEqual(3);
    attacker = new TestBrowser(cookieStore.bff.app);
  });

  const header = (pairs: Array<[string, string]>) => pairs.map(([n, v]) => `${n}=${v}`).join('; ');

  it('chunks .0 and .2 without .1 are no session, and the complete set still is one', async () => {
    const gap = chunks.filter(([name]) => name !== `${SESSION}.1`);
    expectNoSession(await attacker.request('/auth/user', { csrf: false, headers: { cookie: header(gap) } }), 'gap at .1');
    expectNoSession(await attacker.request('/api/orders', { headers: { cookie: header(gap) } }), 'gap at .1');
    await expectSessionIntact(attacker, header(chunks), 'big-claims');
  });

  it('any strict subset, reordering or renumbering of the real chunks is no session', async () => {
    const values = chunks.map(([, value]) => value);
    await fc.assert(
      fc.asyncProperty(fc.shuffledSubarray(values.map((_, i) => i), { minLength: 1 }), fc.boolean(), async (order, renumber) => {
        // Under their original names the order in the header does not matter; renumbered, it does.
        const identical = order.length === values.length && (!renumber || order.every((v, i) => v === i));
        fc.pre(!identical);
        const pairs: Array<[string, string]> = order.map((original, position) => [`${SESSION}.${renumber ? position : original}`, values[original]!]);
        expectNoSession(await attacker.request('/auth/user', { csrf: false, headers: { cookie: header(pairs) } }), `chunks ${order.join(',')} renumber=${renumber}`);
      }),
      { numRuns: 100 },
    );
    await expectSessionIntact(attacker, header(chunks), 'big-claims');
  });

  it('a garbage whole cookie next to valid chunks, or garbage extra chunks after them, never yields another session', async () => {
    for (const pairs of [[[SESSION, 'garbage'], ...chunks], [...chunks, [`${SESSION}.${chunks.length}`, 'garbage']], [...chunks, [`${SESSION}.${chunks.length + 1}`, 'garbage']]] as Array<Array<[string, string]>>) {
      const response = await attacker.request('/auth/user', { csrf: false, headers: { cookie: header(pairs) } });
      if (response.statusCode === 200) expect(response.json<{ claims: { sub: string } }>().claims.sub).toBe('big-claims');
      else expectNoSession(response, pairs.map(([n]) => n).join(','));
    }
    await expectSessionIntact(attacker, header(chunks), 'big-claims');
  });
});

describe('hostile pending-login cookies', () => {
  bystanders('pending', () => [cookieStore]);

  it('pending-login cookies with arbitrary names and values never break /auth/login (302) or /auth/callback (400)', async () => {
    const attacker = new TestBrowser(cookieStore.bff.app);
    const suffix = headerString(40, 1).filter((s) => !s.includes(';') && !s.includes('='));
    await fc.assert(
      fc.asyncProperty(suffix, headerString(200), async (name, value) => {
        const cookie = `${PENDING}${name}=${value}`;
        const login = await attacker.request('/auth/login', { csrf: false, headers: { cookie } });
        expect(login.statusCode, `/auth/login with cookie ${JSON.stringify(cookie.slice(0, 100))}: ${login.body}`).toBe(302);
        const callback = await attacker.request(`/auth/callback?state=${encodeURIComponent(name.trim())}&code=x`, { csrf: false, headers: { cookie } });
        expectErrorAnswer(fromInject(callback), [400], `/auth/callback with cookie ${JSON.stringify(cookie.slice(0, 100))}`);
      }),
      { numRuns: 150 },
    );
  });

  it('a browser carrying a junk pending-login cookie whose name has a space can still start a sign-in over the wire', async () => {
    const response = await rawHttp(cookieStore.port, rawRequest('GET', '/auth/login?returnTo=%2F', [['Cookie', `${PENDING}a b=junk`]]));
    expect(response.status, response.text.slice(0, 400)).toBe(302);
    expectNoInjectedHeader(response);
  });
});

// ---------------------------------------------------------------------------------------------
// Callback parameters
// ---------------------------------------------------------------------------------------------

describe('hostile sign-in responses at /auth/callback', () => {
  bystanders('callback', () => [cookieStore]);

  let other: TestProvider;

  beforeAll(async () => {
    // A second, independent provider: the source of codes for the mix-up attack.
    other = await startProvider({ redirectUris: [REDIRECT_URI] });
  });

  afterAll(async () => {
    await other?.stop();
  });

  /** A browser signed in as `victim-callback` with a sign-in in progress; its provider redirect back, not yet delivered. */
  async function victimMidLogin(): Promise<{ browser: TestBrowser; cookieBefore: string; state: string; callback: URL }> {
    const browser = await signedIn(cookieStore, 'victim-callback');
    const cookieBefore = sessionCookieHeader(browser);
    const authorizationUrl = await browser.startLogin('/after');
    const state = new URL(authorizationUrl).searchParams.get('state')!;
    const callback = new URL(await completeProviderLogin(authorizationUrl, { login: 'victim-callback' }));
    return { browser, cookieBefore, state, callback };
  }

  /** The refused callback started no session: the browser keeps exactly the session it had. */
  async function expectRefusedKeepingSession(browser: TestBrowser, cookieBefore: string, callback: { statusCode: number; body: string; headers: Record<string, unknown> }, context: string) {
    expectErrorAnswer(fromInject(callback), [400], context);
    expect(setCookiesOf(callback).filter((c) => c.startsWith(`${SESSION}=`) && !isClearing(c)), `${context}: a session cookie was set`).toEqual([]);
    expect(sessionCookieHeader(browser)).toBe(cookieBefore);
    await expectSessionIntact(browser, cookieBefore, 'victim-callback');
  }

  it.each([
    ['no parameters at all', (_u: URL) => new URLSearchParams()],
    ['a code without state', (u: URL) => new URLSearchParams({ code: u.searchParams.get('code')! })],
    ['the state without a code', (u: URL) => new URLSearchParams({ state: u.searchParams.get('state')!, iss: u.searchParams.get('iss')! })],
    ['an empty code', (u: URL) => new URLSearchParams({ state: u.searchParams.get('state')!, code: '', iss: u.searchParams.get('iss')! })],
    ['an empty state', (u: URL) => new URLSearchParams({ state: '', code: u.searchParams.get('code')!, iss: u.searchParams.get('iss')! })],
  ])('refuses a sign-in response with %s, and the signed-in session stays', async (name, params) => {
    const { browser, cookieBefore, callback } = await victimMidLogin();
    const response = await browser.request(`/auth/callback?${params(callback).toString()}`, { csrf: false });
    await expectRefusedKeepingSession(browser, cookieBefore, response, name);
  });

  it('refuses a duplicated state without spending the sign-in, which then completes', async () => {
    const { browser, callback } = await victimMidLogin();
    const duplicated = new URL(callback);
    duplicated.searchParams.append('state', callback.searchParams.get('state')!);
    expectErrorAnswer(fromInject(await browser.request(`/auth/callback${duplicated.search}`, { csrf: false })), [400]);
    const bogus = new URL(callback);
    bogus.searchParams.append('state', 'evil-state');
    expectErrorAnswer(fromInject(await browser.request(`/auth/callback${bogus.search}`, { csrf: false })), [400]);
    const genuine = await browser.callback(callback.href);
    expect(genuine.statusCode, genuine.body).toBe(302);
    expect(genuine.headers.location).toBe('/after');
  });

  it('refuses a duplicated code and keeps the previous session', async () => {
    const { browser, cookieBefore, callback } = await victimMidLogin();
    const duplicated = new URL(callback);
    duplicated.searchParams.append('code', 'attacker-code');
    await expectRefusedKeepingSession(browser, cookieBefore, await browser.request(`/auth/callback${duplicated.search}`, { csrf: false }), 'duplicated code');
  });

  it.each(['code', 'state', 'iss', 'error_description', 'unknown'])('refuses a 100 KB %s with 400 through inject and 431 over the wire', async (param) => {
    const { browser, cookieBefore, callback } = await victimMidLogin();
    const huge = new URL(callback);
    huge.searchParams.set(param, 'x'.repeat(100_000));
    if (param === 'error_description') huge.searchParams.set('error', 'access_denied');
    const injected = await browser.request(`/auth/callback${huge.search}`, { csrf: false });
    if (param === 'unknown') {
      // An unknown parameter is ignored (RFC 6749 §3.1): the sign-in completes.
      expect(injected.statusCode, injected.body).toBe(302);
    } else {
      await expectRefusedKeepingSession(browser, cookieBefore, injected, `100 KB ${param}`);
    }
    const wire = await rawHttp(cookieStore.port, rawRequest('GET', `/auth/callback${huge.search}`, [['Cookie', browser.cookieHeader()]]));
    expect(expectErrorAnswer(fromRaw(wire), [431]).error).toBe('headers_too_large');
  });

  it.each([
    ['another issuer', (u: URL) => u.searchParams.set('iss', 'https://evil.example')],
    ['our issuer with a trailing slash', (u: URL) => u.searchParams.set('iss', `${provider.issuer}/`)],
    ['no iss although the provider announces it (RFC 9207)', (u: URL) => u.searchParams.delete('iss')],
    ['iss twice', (u: URL) => u.searchParams.append('iss', 'https://evil.example')],
  ])('refuses a sign-in response with %s as iss, and no session is created', async (name, mutate) => {
    const { browser, cookieBefore, callback } = await victimMidLogin();
    const forged = new URL(callback);
    mutate(forged);
    await expectRefusedKeepingSession(browser, cookieBefore, await browser.request(`/auth/callback${forged.search}`, { csrf: false }), name);
  });

  it.each([
    ['with the other issuer’s iss', (u: URL) => u],
    ['without iss', (u: URL) => (u.searchParams.delete('iss'), u)],
    ['with our issuer forged into iss', (u: URL) => (u.searchParams.set('iss', provider.issuer), u)],
  ])('refuses a mix-up: a code from another provider delivered with our state %s', async (_name, shape) => {
    const { browser, cookieBefore, state } = await victimMidLogin().then(async (m) => {
      // Start a fresh sign-in whose state the attacker pairs with their own code.
      const authorizationUrl = await m.browser.startLogin('/mixup');
      return { ...m, state: new URL(authorizationUrl).searchParams.get('state')! };
    });
    // The attacker signs in as mallory at the other provider (same client_id, same redirect URI).
    const otherUrl = new URL(other.endpoints.authorization);
    otherUrl.search = new URLSearchParams({
      client_id: other.clients.basic.clientId,
      redirect_uri: REDIRECT_URI,
      response_type: 'code',
      scope: 'openid',
      state: 'attacker-state-attacker-state',
      nonce: 'attacker-nonce-attacker-nonce',
      code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM',
      code_challenge_method: 'S256',
    }).toString();
    const attackerCallback = new URL(await completeProviderLogin(otherUrl.href, { login: 'mallory' }));
    expect(attackerCallback.searchParams.get('code')).toBeTruthy();
    attackerCallback.searchParams.set('state', state);
    const delivered = shape(attackerCallback);
    const response = await browser.request(`/auth/callback${delivered.search}`, { csrf: false });
    await expectRefusedKeepingSession(browser, cookieBefore, response, 'mix-up');
  });

  it('random callback parameters are refused with 400 while a sign-in is pending, and that sign-in then completes', async () => {
    const { browser, cookieBefore, callback } = await victimMidLogin();
    const key = fc.constantFrom('state', 'code', 'iss', 'error', 'error_description', 'session_state', 'response', 'id_token', 'token', 'x');
    await fc.assert(
      fc.asyncProperty(fc.array(fc.tuple(key, fc.oneof(fc.string({ maxLength: 60 }), fc.constantFrom(provider.issuer, 'access_denied', callback.searchParams.get('code')!))), { maxLength: 8 }), async (pairs) => {
        const query = new URLSearchParams(pairs).toString();
        const response = await browser.request(`/auth/callback?${query}`, { csrf: false });
        await expectRefusedKeepingSession(browser, cookieBefore, response, query.slice(0, 200));
      }),
      { numRuns: 150 },
    );
    const genuine = await browser.callback(callback.href);
    expect(genuine.statusCode, genuine.body).toBe(302);
    expect(genuine.headers.location).toBe('/after');
  });

  it('an error response with CRLF in error and error_description is a JSON 400 with no injected header', async () => {
    const browser = new TestBrowser(cookieStore.bff.app);
    const authorizationUrl = await browser.startLogin('/');
    const state = new URL(authorizationUrl).searchParams.get('state')!;
    const query = `state=${state}&error=access_denied%0d%0aSet-Cookie:%20pwn=1&error_description=%0d%0aInjected:%201`;
    const response = await rawHttp(cookieStore.port, rawRequest('GET', `/auth/callback?${query}`, [['Cookie', browser.cookieHeader()]]));
    expectErrorAnswer(fromRaw(response), [400]);
    expectNoInjectedHeader(response);
  });
});

// ---------------------------------------------------------------------------------------------
// returnTo
// ---------------------------------------------------------------------------------------------

/** A Location the browser resolves to our own origin: one leading slash, no control characters or whitespace. */
function expectSameOriginPath(location: string | undefined, context: string): void {
  expect(location, context).toBeDefined();
  const value = location!;
  expect(value, context).toMatch(/^\/(?![/\\])/);
  // eslint-disable-next-line no-control-regex
  expect(value, context).not.toMatch(/[\u0000-\u0020\u007f-\u00a0\u2028\u2029\u3000\\]/);
  expect(new URL(value, PUBLIC_URL).origin, context).toBe(PUBLIC_URL);
  // Decoded once more (as some servers and browsers do), it must still be a single-slash path.
  let decoded = value;
  for (let i = 0; i < 3; i++) {
    try {
      decoded = decodeURIComponent(decoded);
    } catch {
      break;
    }
    expect(decoded, `${context} (decoded)`).toMatch(/^\/(?![/\\])/);
    // eslint-disable-next-line no-control-regex
    expect(decoded, `${context} (decoded)`).not.toMatch(/^[^?#]*[\r\n\u0000]/);
  }
}

describe('hostile returnTo', () => {
  bystanders('returnTo', () => [cookieStore]);

  // Each value is the raw query-string value as it appears on the wire after `returnTo=`.
  it.each<[string, string, string | undefined]>([
    ['protocol-relative', '//evil.example', '/'],
    ['protocol-relative, encoded', '%2F%2Fevil.example', '/'],
    ['absolute https', 'https://evil.example/', '/'],
    ['https: without slashes', 'https:evil.example', '/'],
    ['scheme with backslashes', 'https:%5C%5Cevil.example', '/'],
    ['javascript:', 'javascript:alert(1)', '/'],
    ['data:', 'data:text/html,%3Cscript%3Ealert(1)%3C/script%3E', '/'],
    ['backslash host', '/%5Cevil.example', '/'],
    ['raw backslash host', '/\\evil.example', '/'],
    ['double backslash', '%5C%5Cevil.example', '/'],
    ['encoded slashes', '/%2F%2Fevil.example', '/'],
    ['double-encoded slashes', '/%252F%252Fevil.example', '/'],
    ['tab between slashes', '/%09/evil.example', '/'],
    ['tab after two slashes', '//%09evil.example', '/'],
    ['CRLF header injection', '/%0d%0aSet-Cookie:%20pwn=1', '/'],
    ['double-encoded CRLF', '/%250d%250aSet-Cookie:%20pwn=1', '/'],
    ['CRLF injection of a Location', '/ok%0d%0aLocation:%20https://evil.example', '/'],
    ['dot segments to a protocol-relative path', '/.//evil.example', '/'],
    ['dot-dot to a protocol-relative path', '/..//evil.example', '/'],
    ['encoded dot-dot', '/%2e%2e//evil.example', '/'],
    ['ideographic space (kept as an encoded path segment)', '/%E3%80%80/evil.example', undefined],
    ['fullwidth solidi', '%EF%BC%8F%EF%BC%8Fevil.example', '/'],
    ['NUL byte', '/ok%00', '/'],
    ['line separator', '/ok%E2%80%A8x', '/'],
    ['broken encoding', '/%E0%A4%A', '/'],
    ['very long', `/${'a'.repeat(4000)}`, '/'],
    ['unicode path (kept, encoded)', '/caf%C3%A9/%C3%BC', '/caf%C3%A9/%C3%BC'],
    ['ordinary path and query (kept)', '/orders%3Ftab%3Dopen', '/orders?tab=open'],
    ['a query holding //evil (kept: it is only a query)', '/search%3Fq%3D%2F%2Fevil.example', '/search?q=//evil.example'],
  ])('sends the user to a same-origin path after sign-in for returnTo = %s', async (_name, raw, expected) => {
    const login = await rawHttp(cookieStore.port, rawRequest('GET', `/auth/login?returnTo=${raw}`));
    expectNoInjectedHeader(login);
    expect(login.status, login.text.slice(0, 300)).toBe(302);
    const authorizationUrl = login.headers.location![0]!;
    expect(new URL(authorizationUrl).origin).toBe(provider.issuer);
    const callbackUrl = new URL(await completeProviderLogin(authorizationUrl, { login: 'returnto-user' }));
    const callback = await rawHttp(
      cookieStore.port,
      rawRequest('GET', `${callbackUrl.pathname}${callbackUrl.search}`, [['Cookie', cookieHeaderOfRaw(login)]]),
    );
    expectNoInjectedHeader(callback);
    expect(callback.status, callback.text.slice(0, 300)).toBe(302);
    const location = callback.headers.location?.[0];
    expectSameOriginPath(location, `returnTo=${raw.slice(0, 80)}`);
    if (expected !== undefined) expect(location).toBe(expected);
  });

  it('any returnTo becomes a same-origin path in the pending sign-in (property)', async () => {
    const browser = new TestBrowser(cookieStore.bff.app);
    const sealer = new Sealer([SECRET]);
    const fragment = fc.constantFrom('/', '//', '\\', '%2f', '%2F', '%5c', '%252f', '.', '..', '%2e', 'evil.example', ':', 'https:', 'javascript:', '%0d%0a', '\r\n', '\t', '%09', '@', '?', '#', '%', '%25', 'é', '\u3000', '／', '\u2028', '\u0000', 'x');
    const returnTo = fc.oneof(fc.array(fragment, { maxLength: 8 }).map((parts) => parts.join('')), fc.string({ unit: 'grapheme', maxLength: 40 }), fc.string({ unit: 'binary', maxLength: 40 }));
    await fc.assert(
      fc.asyncProperty(returnTo, async (value) => {
        for (const name of [...browser.cookies.keys()]) browser.cookies.delete(name);
        const login = await browser.request(`/auth/login?returnTo=${encodeURIComponent(value)}`, { csrf: false });
        expect(login.statusCode, login.body).toBe(302);
        const [, sealed] = [...browser.cookies].find(([name]) => name.startsWith(PENDING))!;
        const pending = await sealer.unseal<{ returnTo: string }>(sealed);
        expectSameOriginPath(pending?.returnTo, `returnTo=${JSON.stringify(value)}`);
      }),
      { numRuns: 250 },
    );
  });
});

// ---------------------------------------------------------------------------------------------
// Header injection
// ---------------------------------------------------------------------------------------------

describe('header injection attempts (CRLF)', () => {
  bystanders('crlf', () => [cookieStore]);

  let victim: TestBrowser;

  beforeAll(async () => {
    victim = await signedIn(cookieStore, 'victim-crlf');
  });

  it.each<[string, Array<[string, string]>]>([
    ['a bare CR in X-Request-Id', [['X-Request-Id', 'abc\rSet-Cookie: pwn=1']]],
    ['a bare LF in X-Request-Id', [['X-Request-Id', 'abc\nSet-Cookie: pwn=1']]],
    ['an obs-fold continuation line', [['X-Request-Id', 'abc\r\n Set-Cookie: pwn=1']]],
    ['a NUL byte in a header', [['X-Request-Id', 'abc\u0000def']]],
    ['a bare CR in the cookie', [['Cookie', `${SESSION}=abc\rSet-Cookie: pwn=1`]]],
    ['a header without a name', [['', 'pwn=1']]],
    ['a space before the colon', [['X-Request-Id ', 'pwn']]],
  ])('refuses %s with a 400 JSON answer and no injected header', async (_name, headers) => {
    const response = await rawHttp(cookieStore.port, rawRequest('GET', '/auth/user', headers));
    expectErrorAnswer(fromRaw(response), [400]);
    expectNoInjectedHeader(response);
  });

  it('does not reflect an X-Request-Id carrying encoded CRLF; a fresh id is used', async () => {
    const response = await rawHttp(cookieStore.port, rawRequest('GET', '/healthz', [['X-Request-Id', 'abc%0d%0aSet-Cookie:%20pwn=1']]));
    expect(response.status).toBe(200);
    expectNoInjectedHeader(response);
    expect(response.headers['x-request-id']).toEqual([expect.stringMatching(/^[0-9a-f]{18}-\d+$/)]);
  });

  it('treats a Set-Cookie sent by the client as just another request header', async () => {
    const response = await rawHttp(cookieStore.port, rawRequest('GET', '/healthz', [['X-Request-Id', 'abc'], ['Set-Cookie', 'pwn=1'], ['Injected', '1']]));
    expect(response.status).toBe(200);
    expectNoInjectedHeader(response);
    expect(response.headers['x-request-id']).toEqual(['abc']);
  });

  it('echoes only safe X-Request-Ids, to the browser and upstream alike (property)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.oneof(headerString(140, 1), fc.stringMatching(/^[A-Za-z0-9._:-]{1,130}$/)), fc.nat(4), async (id, pick) => {
        const proxied = pick === 0;
        const response = await victim.request(proxied ? '/api/request-id' : '/auth/user', { csrf: proxied, headers: { 'x-request-id': id } });
        expect(response.statusCode).toBe(200);
        const echoed = String(response.headers['x-request-id']);
        if (/^[A-Za-z0-9._:-]{1,128}$/.test(id)) expect(echoed).toBe(id);
        else expect(echoed).toMatch(/^[0-9a-f]{18}-\d+$/);
        if (proxied) expect(response.json<EchoBody>().headers['x-request-id']).toBe(echoed);
      }),
      { numRuns: 150 },
    );
  });


  it.each([
    ['an encoded CRLF in the proxied path', '/api/x%0d%0aInjected:%201'],
    ['an encoded CRLF in the proxied query', '/api/x?q=%0d%0aInjected:%201&r=%0aSet-Cookie:%20pwn=1'],
    ['an encoded CRLF in a path segment followed by a request line', '/api/x%0d%0a%0d%0aGET%20/secret%20HTTP/1.1'],
  ])('passes %s upstream as data, inside the prefix, with no header injected in the answer', async (_name, target) => {
    const before = upstream.requests.length;
    const response = await rawHttp(cookieStore.port, rawRequest('GET', target, [['Cookie', sessionCookieHeader(victim)], ['X-CSRF', '1']]));
    expectNoInjectedHeader(response);
    expect(response.status, response.text.slice(0, 300)).toBe(200);
    expect(JSON.parse(response.body).sub).toBe('victim-crlf');
    const seen = upstream.requests.slice(before).filter((r) => r.sub === 'victim-crlf');
    expect(seen.length).toBeGreaterThan(0);
    for (const request of seen) expect(insidePrefix(request.url), request.url).toBe(true);
    // Upstream saw exactly one request for it: no smuggled second request.
    expect(seen).toHaveLength(1);
  });

  it('does not tunnel an Upgrade: websocket request; the upstream never sees the client’s Upgrade header', async () => {
    const before = upstream.requests.length;
    const response = await rawHttp(
      cookieStore.port,
      rawRequest('GET', '/api/socket', [
        ['Cookie', sessionCookieHeader(victim)],
        ['X-CSRF', '1'],
        ['Upgrade', 'websocket'],
        ['Sec-WebSocket-Key', 'dGhlIHNhbXBsZSBub25jZQ=='],
        ['Sec-WebSocket-Version', '13'],
        ['Connection', 'Upgrade, Authorization'],
      ]),
      3000,
    );
    expect(response.status).not.toBe(101);
    expectNoInjectedHeader(response);
    if (response.status >= 400) expectErrorAnswer(fromRaw(response));
    for (const request of upstream.requests.slice(before).filter((r) => r.url.includes('socket'))) {
      expect(request.headers.upgrade).toBeUndefined();
      expect(request.tokenActive).toBe(true);
    }
  });

  it('refuses API calls whose Origin or Sec-Fetch-Site says another site with 403 csrf_failed (property)', async () => {
    const origin = fc.oneof(fc.constantFrom('null', 'https://evil.example', `${PUBLIC_URL}.evil.example`, `${PUBLIC_URL}:443`, PUBLIC_URL.replace('https', 'http'), `${PUBLIC_URL}/`, PUBLIC_URL.toUpperCase()), fc.webUrl(), headerString(60, 1));
    await fc.assert(
      fc.asyncProperty(origin, fc.boolean(), async (value, asOrigin) => {
        fc.pre(value !== PUBLIC_URL && !(!asOrigin && (value === 'same-origin' || value === 'none')));
        const response = await victim.request('/api/orders', { method: 'POST', headers: asOrigin ? { origin: value } : { 'sec-fetch-site': value } });
        expect(expectErrorAnswer(fromInject(response), [403], `${asOrigin ? 'Origin' : 'Sec-Fetch-Site'}: ${value}`).error).toBe('csrf_failed');
      }),
      { numRuns: 100 },
    );
    expect((await victim.request('/api/orders', { method: 'POST', headers: { origin: PUBLIC_URL } })).statusCode).toBe(200);
  });

  it('answers a cookie value with encoded CRLF with 401, clearing only its own cookie', async () => {
    const response = await rawHttp(cookieStore.port, rawRequest('GET', '/auth/user', [['Cookie', `${SESSION}=abc%0d%0aSet-Cookie:%20pwn=1`]]));
    expect(expectErrorAnswer(fromRaw(response), [401]).error).toBe('login_required');
    expectNoInjectedHeader(response);
    for (const cookie of response.headers['set-cookie'] ?? []) expect(cookie).toMatch(new RegExp(`^${SESSION}=;`));
  });

  it.each([
    ['a raw CRLF in the request target', 'GET /auth/login?returnTo=/x\r\nSet-Cookie: pwn=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'],
    ['a raw LF in the request target', 'GET /api/x\nInjected: 1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'],
  ])('answers %s without any injected response header', async (_name, request) => {
    // Node reads the bytes after the line break as request headers: another request, not a split response.
    const before = upstream.requests.length;
    const response = await rawHttp(cookieStore.port, request);
    expectNoInjectedHeader(response);
    expect(response.status).toBeGreaterThan(0);
    expect(response.status).toBeLessThan(500);
    if (response.status >= 400) expectErrorAnswer(fromRaw(response));
    expect(upstream.requests.slice(before).filter((r) => !r.url.startsWith('/v1/bystander/'))).toEqual([]);
  });

  it.each([
    ['a space in the request target', 'GET /api/x y HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'],
    ['Content-Length and Transfer-Encoding together (smuggling)', 'POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n'],
    ['two different Content-Lengths', 'POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\nConnection: close\r\n\r\nab'],
  ])('refuses %s with a 400 JSON answer', async (_name, request) => {
    const before = upstream.requests.length;
    const response = await rawHttp(cookieStore.port, request);
    expectErrorAnswer(fromRaw(response), [400]);
    expectNoInjectedHeader(response);
    expect(upstream.requests.slice(before).filter((r) => !r.url.startsWith('/v1/bystander/'))).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------------
// Route prefix escapes and odd methods
// ---------------------------------------------------------------------------------------------

describe('paths and methods that try to escape the route prefix', () => {
  bystanders('prefix', () => [cookieStore]);

  let victim: TestBrowser;

  beforeAll(async () => {
    victim = await signedIn(cookieStore, 'victim-prefix');
  });

  const authHeaders = (): Array<[string, string]> => [['Cookie', sessionCookieHeader(victim)], ['X-CSRF', '1']];

  /** Refused (4xx JSON) or proxied to a path inside /v1; in both cases the upstream saw nothing outside it. */
  async function expectContained(method: string, target: string): Promise<RawResponse> {
    const before = upstream.requests.length;
    const response = await rawHttp(cookieStore.port, rawRequest(method, target, authHeaders()));
    expectNoInjectedHeader(response);
    expect(response.status, `${method} ${target}: ${response.text.slice(0, 300)}`).not.toBe(0);
    if (response.status >= 200 && response.status < 300) {
      const echo = JSON.parse(response.body) as EchoBody;
      expect(echo.sub).toBe('victim-prefix');
      expect(insidePrefix(echo.path), `${target} reached ${echo.path}`).toBe(true);
    } else {
      expectErrorAnswer(fromRaw(response), undefined, `${method} ${target}`);
    }
    for (const request of upstream.requests.slice(before)) expect(insidePrefix(request.url), `${target} reached ${request.url}`).toBe(true);
    return response;
  }

  it.each([
    '/api/../auth/user',
    '/api/../../etc/passwd',
    '/api/%2e%2e/auth/user',
    '/api/%2E%2E/auth',
    '/api/%2e%2e%2f%2e%2e/secret',
    '/api/..%2f..%2fsecret',
    '/api/..%2F..%2Fsecret',
    '/api/..%5c..%5csecret',
    '/api/.%2e/secret',
    '/api/%2e./secret',
    '/api/.%2e/',
    '/api/x/../../secret',
    '/api/x/..',
    '/api/..',
    '/api/./../secret',
    '/api/;/../secret',
    '/api/..;/secret',
    '/api/%00/../secret',
    '/api\\..\\secret',
    '/api/\\..\\secret',
    '/api/%5c..%5csecret',
    '/api/x?/../../secret',
    '/api/x#/../../secret',
    '//api/x',
    '/api//x',
    '/api///..//secret',
    '/API/x',
    '/Api/x',
    '/api%2fx',
    '/api%2F..%2Fsecret',
    '/api/%252e%252e/secret',
    '/api/http://evil.example/x',
    '/api//evil.example/x',
    '/api/\\\\evil.example/x',
    'http://evil.example/api/x',
    'http://evil.example/api/../secret',
    '*',
  ])('keeps %s inside the prefix or refuses it with 4xx JSON', async (target) => {
    await expectContained('GET', target);
  });

  it('keeps a 4 KB path inside the prefix (no router parameter limit turns it into a 5xx)', async () => {
    await expectContained('GET', `/api/${'a'.repeat(2000)}/${'%2e'.repeat(600)}`);
  });

  it('refuses malformed or overlong UTF-8 percent-encodings in the path with the 400 JSON error shape', async () => {
    const targets = ['/api/%c0%ae%c0%ae/secret', '/api/%c0%af', '/api/%ff', '/api/%', '/api/%zz', '/api/%e0%a4%a', '/%ff', '/auth/user%c0'];
    const answers: Array<{ target: string; status: number; body: unknown }> = [];
    for (const target of targets) {
      const before = upstream.requests.length;
      const response = await rawHttp(cookieStore.port, rawRequest('GET', target, authHeaders()));
      expectNoInjectedHeader(response);
      expect(response.body, target).not.toMatch(/\n\s*at\s|node_modules/);
      for (const request of upstream.requests.slice(before)) expect(insidePrefix(request.url), `${target} reached ${request.url}`).toBe(true);
      let body: unknown = response.body;
      try {
        body = JSON.parse(response.body);
      } catch {
        // compared as text below
      }
      answers.push({ target, status: response.status, body });
    }
    expect(answers).toEqual(targets.map((target) => ({ target, status: 400, body: { error: 'bad_request', error_description: expect.any(String) } })));
  });

  it('never lets any combination of dots, slashes, backslashes and encodings out of the prefix (property)', async () => {
    const fragment = fc.constantFrom('..', '.', '%2e', '%2E', '%2e%2e', '.%2e', '%2e.', '/', '//', '%2f', '%2F', '\\', '%5c', '%5C', '%252e', '%252f', ';', '%3b', '%00', '%09', 'x', 'secret', 'v1', 'auth', '%c3%a9', '@', ':', 'http:');
    await fc.assert(
      fc.asyncProperty(fc.array(fragment, { minLength: 1, maxLength: 10 }), fc.constantFrom('GET', 'POST', 'DELETE'), async (parts, method) => {
        await expectContained(method, `/api/${parts.join('')}`);
      }),
      { numRuns: 150 },
    );
  });

  it.each(['PROPFIND', 'TRACE', 'MKCOL', 'LOCK', 'COPY', 'MOVE', 'SEARCH', 'PURGE'])('answers %s on an API path with 4xx JSON and never forwards it', async (method) => {
    const before = upstream.requests.length;
    const response = await rawHttp(cookieStore.port, rawRequest(method, '/api/x', authHeaders()));
    expectErrorAnswer(fromRaw(response), undefined, method);
    expect(upstream.requests.slice(before).filter((r) => r.method === method)).toEqual([]);
  });

  it('answers an unknown method token with 400 JSON', async () => {
    const response = await rawHttp(cookieStore.port, rawRequest('FOO', '/api/x', authHeaders()));
    expectErrorAnswer(fromRaw(response), [400]);
  });

  it('refuses CONNECT (no tunnel is opened: the connection is closed or a 4xx JSON comes back)', async () => {
    const before = upstream.requests.length;
    const response = await rawHttp(cookieStore.port, rawRequest('CONNECT', `127.0.0.1:${upstream.port}`, authHeaders()));
    if (response.text !== '') expectErrorAnswer(fromRaw(response), undefined, 'CONNECT');
    expect(upstream.requests.slice(before).filter((r) => r.method === 'CONNECT')).toEqual([]);
    expect((await fetch(`http://127.0.0.1:${cookieStore.port}/healthz`)).status).toBe(200);
  });
});

// ---------------------------------------------------------------------------------------------
// Oversized bodies and headers
// ---------------------------------------------------------------------------------------------

describe('oversized bodies and headers', () => {
  bystanders('limits', () => [cookieStore]);

  let victim: TestBrowser;

  beforeAll(async () => {
    victim = await signedIn(cookieStore, 'victim-limits');
  });

  const authHeaders = (): Array<[string, string]> => [['Cookie', sessionCookieHeader(victim)], ['X-CSRF', '1']];
  const uploadsOf = (marker: string) => upstream.requests.filter((r) => r.url.includes(marker));

  it('refuses a body over the limit (Content-Length) with 413 payload_too_large before the upstream sees it', async () => {
    const response = await rawHttp(
      cookieStore.port,
      rawRequest('POST', '/api/upload-cl', [...authHeaders(), ['Content-Type', 'application/octet-stream'], ['Content-Length', String(BODY_LIMIT + 1)]], Buffer.alloc(BODY_LIMIT + 1, 'a')),
    );
    expect(expectErrorAnswer(fromRaw(response), [413]).error).toBe('payload_too_large');
    expect(uploadsOf('upload-cl')).toEqual([]);
    await expectSessionIntact(victim, sessionCookieHeader(victim), 'victim-limits');
  });

  it('refuses a chunked body that grows over the limit with 413 payload_too_large; the upstream never gets all of it', async () => {
    const piece = 'a'.repeat(16_384);
    const chunked = `${`${piece.length.toString(16)}\r\n${piece}\r\n`.repeat(6)}0\r\n\r\n`;
    const response = await rawHttp(
      cookieStore.port,
      rawRequest('POST', '/api/upload-chunked', [...authHeaders(), ['Content-Type', 'application/octet-stream'], ['Transfer-Encoding', 'chunked']], chunked),
    );
    expect(expectErrorAnswer(fromRaw(response), [413]).error).toBe('payload_too_large');
    for (const request of uploadsOf('upload-chunked')) expect(request.body.length).toBeLessThanOrEqual(BODY_LIMIT);
    await expectSessionIntact(victim, sessionCookieHeader(victim), 'victim-limits');
  });

  it('refuses a Content-Length of 10^15 with 413 without waiting for the body', async () => {
    const response = await rawHttp(
      cookieStore.port,
      rawRequest('POST', '/api/upload-huge', [...authHeaders(), ['Content-Type', 'application/json'], ['Content-Length', '1000000000000000']], '{"a":1}'),
      3000,
    );
    expect(expectErrorAnswer(fromRaw(response), [413]).error).toBe('payload_too_large');
    expect(uploadsOf('upload-huge')).toEqual([]);
  });

  it('proxies a body of exactly the limit intact (the limit is not off by one)', async () => {
    const response = await victim.request('/api/upload-exact', { method: 'POST', payload: Buffer.alloc(BODY_LIMIT, 'z'), headers: { 'content-type': 'application/octet-stream' } });
    expect(response.statusCode, response.body.slice(0, 200)).toBe(200);
    expect(uploadsOf('upload-exact').at(-1)?.body.length).toBe(BODY_LIMIT);
  });

  it('answers 413 exactly for bodies over the limit around the boundary (property)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: BODY_LIMIT - 32, max: BODY_LIMIT + 32 }), async (size) => {
        const response = await victim.request(`/api/upload-${size}`, { method: 'PUT', payload: Buffer.alloc(size, 'q'), headers: { 'content-type': 'application/octet-stream' } });
        if (size <= BODY_LIMIT) expect(response.statusCode).toBe(200);
        else expect(expectErrorAnswer(fromInject(response), [413]).error).toBe('payload_too_large');
      }),
      { numRuns: 40 },
    );
  });

  it.each([
    ['POST /auth/logout', '/auth/logout', 'application/json'],
    ['POST /auth/refresh', '/auth/refresh', 'application/json'],
  ])('refuses an oversized body on %s with 413 and does not act on it: the session stays', async (_name, path, contentType) => {
    const body = `{"x":"${'a'.repeat(BODY_LIMIT)}"}`;
    const response = await rawHttp(cookieStore.port, rawRequest('POST', path, [...authHeaders(), ['Content-Type', contentType], ['Content-Length', String(body.length)]], body));
    expect(expectErrorAnswer(fromRaw(response), [413]).error).toBe('payload_too_large');
    expect(response.headers['set-cookie'] ?? []).toEqual([]);
    await expectSessionIntact(victim, sessionCookieHeader(victim), 'victim-limits');
  });

  it('refuses an oversized back-channel logout with 413', async () => {
    const body = `logout_token=${'a'.repeat(BODY_LIMIT)}`;
    const response = await rawHttp(
      cookieStore.port,
      rawRequest('POST', '/auth/backchannel-logout', [['Content-Type', 'application/x-www-form-urlencoded'], ['Content-Length', String(body.length)]], body),
    );
    expect(expectErrorAnswer(fromRaw(response), [413]).error).toBe('payload_too_large');
  });

  it('refuses forged back-channel logout tokens with 400 and ends no session (property)', async () => {
    const b64 = (value: unknown) => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');
    const header = fc.record({ alg: fc.constantFrom('RS256', 'ES256', 'PS256', 'EdDSA', 'HS256', 'none', 'RSA-OAEP', ''), kid: fc.option(fc.string({ maxLength: 20 }), { nil: undefined }), typ: fc.option(fc.constantFrom('logout+jwt', 'JWT', 'at+jwt'), { nil: undefined }) }, { requiredKeys: ['alg'] });
    const payload = fc.record({ iss: fc.constantFrom(provider.issuer, 'https://evil.example'), aud: fc.constantFrom(provider.clients.basic.clientId, 'other'), sub: fc.constantFrom('victim-limits', 'bystander-limits-0'), iat: fc.constant(Math.floor(Date.now() / 1000)), jti: fc.uuid(), events: fc.constant({ 'http://schemas.openid.net/event/backchannel-logout': {} }) });
    const token = fc.oneof(
      fc.tuple(header, payload, fc.string({ unit: 'binary-ascii', maxLength: 40 })).map(([h, p, s]) => `${b64(h)}.${b64(p)}.${b64(s)}`),
      fc.string({ maxLength: 200 }),
      fc.array(fc.string({ unit: 'binary-ascii', maxLength: 30 }), { minLength: 2, maxLength: 6 }).map((parts) => parts.join('.')),
    );
    await fc.assert(
      fc.asyncProperty(token, async (logoutToken) => {
        const response = await cookieStore.bff.app.inject({
          method: 'POST',
          url: '/auth/backchannel-logout',
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
          payload: new URLSearchParams({ logout_token: logoutToken }).toString(),
        });
        expectErrorAnswer(fromInject(response), [400], logoutToken.slice(0, 120));
      }),
      { numRuns: 100 },
    );
    await expectSessionIntact(victim, sessionCookieHeader(victim), 'victim-limits');
  });

  it.each([
    ['one header over the limit', [['X-Big', 'a'.repeat(HEADER_LIMIT + 100)]]],
    ['many small headers adding up over the limit', Array.from({ length: 200 }, (_, i) => [`X-H${i}`, 'a'.repeat(50)])],
    ['a cookie header over the limit', [['Cookie', `${SESSION}=${'A'.repeat(HEADER_LIMIT + 100)}`]]],
  ] as Array<[string, Array<[string, string]>]>)('refuses %s with 431 headers_too_large JSON, and keeps serving', async (_name, headers) => {
    const response = await rawHttp(cookieStore.port, rawRequest('GET', '/api/x', headers));
    expect(expectErrorAnswer(fromRaw(response), [431]).error).toBe('headers_too_large');
    expect((await fetch(`http://127.0.0.1:${cookieStore.port}/healthz`)).status).toBe(200);
  });

  it('refuses a request line (URL) over the header limit with 431 JSON', async () => {
    const response = await rawHttp(cookieStore.port, rawRequest('GET', `/api/x?q=${'a'.repeat(HEADER_LIMIT + 100)}`, authHeaders()));
    expect(expectErrorAnswer(fromRaw(response), [431]).error).toBe('headers_too_large');
  });

  it('serves headers just under the limit normally', async () => {
    const used = sessionCookieHeader(victim).length + 200;
    const response = await rawHttp(cookieStore.port, rawRequest('GET', '/api/near-limit', [...authHeaders(), ['X-Pad', 'p'.repeat(HEADER_LIMIT - used - 400)]]));
    expect(response.status, response.text.slice(0, 300)).toBe(200);
    expect(JSON.parse(response.body).sub).toBe('victim-limits');
  });
});

// ---------------------------------------------------------------------------------------------
// Catch-all
// ---------------------------------------------------------------------------------------------

describe('after all of the above', () => {
  it('token-handler answered no request with a 5xx and logged no unhandled error', () => {
    for (const { bff } of [cookieStore, memoryStore]) {
      const serverErrors = bff.logs
        .filter((line) => (line.msg === 'request' && typeof line.status === 'number' && line.status >= 500) || line.msg === 'unhandled error' || (typeof line.level === 'number' && line.level >= 50))
        .map((line) => JSON.stringify(line).slice(0, 300));
      expect(serverErrors).toEqual([]);
    }
  });
});
