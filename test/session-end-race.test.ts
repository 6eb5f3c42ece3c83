/**
 * A session that ended stays ended, whatever was in flight when it ended.
 *
 * Per store (cookie with its denylist in Redis and two replicas; memory; redis with two
 * replicas), many rounds of: a browser signs in; parallel `POST /auth/refresh` loops and API
 * calls (each making a proactive refresh due) run against the replicas while the real
 * provider's token answers are held back at random (it has issued the tokens, the answer
 * has not arrived yet); then the session ends — a logout, a back-channel logout, or an idle
 * timeout (the clock jumps past it) — in the middle of it. Afterwards every session cookie
 * the browser ever received must be refused on every replica, and no refresh token whose
 * answer reached token-handler after the end may still work at the provider (for a logout:
 * none of the round's refresh tokens).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { isTokenActive, startProvider, type TestProvider } from './support/provider.js';
import { startIntrospectingUpstream, type Upstream } from './support/upstream.js';
import { REDIRECT_URI, SECRET, startBff, TestBrowser, type TestBff } from './support/bff.js';
import { redisServerInstalled, startRedisServer, uniquePrefix, warnRedisSkipped, type RedisServer } from './support/redis.js';
import { postLogoutToken, signLogoutToken } from './support/logout-token.js';

const SESSION = '__Host-th_session';
/** Rounds per store and ending; RACE_ROUNDS raises it for a longer local run. */
const ROUNDS = Number(process.env.RACE_ROUNDS ?? 3);
/** How long a provider answer is held back: mostly briefly, now and then long enough for the end to land meanwhile. */
const holdBack = () => (Math.random() < 0.3 ? random(500, 1200) : random(0, 150));
const IDLE_TIMEOUT_SECONDS = 600;

const hasRedis = redisServerInstalled();
if (!hasRedis) warnRedisSkipped('test/session-end-race.test.ts (cookie+Redis and redis stores)');

type StoreSetup = 'cookie+redis' | 'memory' | 'redis';
type Ending = 'logout' | 'backchannel' | 'idle';

let provider: TestProvider;
let upstream: Upstream;
let redisServer: RedisServer | undefined;
/** The replicas' shared clock: real time plus a jump the test controls. */
const clock = { offsetMs: 0 };
const now = () => Date.now() + clock.offsetMs;

beforeAll(async () => {
  // A back-channel logout URI makes the provider put `sid` in ID tokens; the test posts the logout tokens itself.
  provider = await startProvider({ redirectUris: [REDIRECT_URI], accessTokenTtlSeconds: 60, backchannelLogoutUri: 'http://127.0.0.1:9/never-called' });
  upstream = await startIntrospectingUpstream(provider);
  if (hasRedis) redisServer = await startRedisServer();
});

afterAll(async () => {
  await upstream.close();
  await provider.stop();
  await redisServer?.stop();
});

async function replicas(setup: StoreSetup): Promise<FastifyInstance[]> {
  const keyPrefix = uniquePrefix();
  const store = setup === 'cookie+redis' ? 'cookie' : setup;
  const count = setup === 'memory' ? 1 : 2;
  const apps: FastifyInstance[] = [];
  for (let i = 0; i < count; i++) {
    const bff: TestBff = await startBff(
      {
        oidc: { issuer: provider.issuer, clientId: provider.clients.basic.clientId, clientSecret: provider.clients.basic.clientSecret },
        session: {
          store,
          secrets: [SECRET],
          idleTimeoutSeconds: IDLE_TIMEOUT_SECONDS,
          ...(setup === 'memory' ? {} : { redis: { url: redisServer!.url, keyPrefix } }),
        },
        routes: [{ prefix: '/api', upstream: upstream.url }],
        // Forced refreshes are not rate-limited here: the more refreshes in flight, the harder the race.
        refresh: { forcedMinIntervalSeconds: 0 },
      },
      { now },
    );
    // Traffic reaches a replica once it is ready (its Redis connection is up).
    await expect.poll(async () => (await bff.app.inject({ method: 'GET', url: '/readyz' })).statusCode, { timeout: 5000 }).toBe(200);
    apps.push(bff.app);
  }
  return apps;
}

/** One browser's cookie jar shared by its tabs on every replica; remembers every session cookie it was given. */
class Tabs {
  cookie: string | undefined;
  readonly everySessionCookie = new Set<string>();
  /** When each call was sent and what it got. */
  readonly calls: Array<{ sentAt: number; status: number }> = [];

  constructor(signedIn: TestBrowser) {
    this.cookie = signedIn.cookies.get(SESSION);
    if (this.cookie) this.everySessionCookie.add(this.cookie);
  }

  async call(app: FastifyInstance, method: 'GET' | 'POST', url: string): Promise<LightMyRequestResponse> {
    const sentAt = Date.now();
    const response = await app.inject({
      method,
      url,
      headers: { 'x-csrf': '1', ...(this.cookie ? { cookie: `${SESSION}=${this.cookie}` } : {}) },
    });
    this.calls.push({ sentAt, status: response.statusCode });
    for (const cookie of response.cookies as Array<{ name: string; value: string; maxAge?: number }>) {
      if (cookie.name !== SESSION) continue;
      if (cookie.value === '' || (cookie.maxAge !== undefined && cookie.maxAge <= 0)) this.cookie = undefined;
      else {
        this.cookie = cookie.value;
        this.everySessionCookie.add(cookie.value);
      }
    }
    return response;
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const random = (min: number, max: number) => min + Math.random() * (max - min);


interface RoundResult {
  /** Calls sent after the end that were served as signed in (a session written back to life). */
  servedAfterEnd: number;
  /** Cookies the browser received that a replica still accepted after the end. */
  acceptedCookies: number;
  /** Refresh tokens that should be dead at the provider but are not. */
  liveRefreshTokens: number;
  refreshesDuringRound: number;
}

async function round(apps: FastifyInstance[], ending: Ending, login: string): Promise<RoundResult> {
  const signedIn = new TestBrowser(apps[0]!);
  await signedIn.login({ login });
  const tabs = new Tabs(signedIn);
  const sid = (await tabs.call(apps[0]!, 'GET', '/auth/user')).json<{ claims: { sid?: string } }>().claims.sid;
  expect(sid, 'the provider names its session in the ID token').toBeTypeOf('string');
  const firstRequest = provider.tokenRequests.length;

  provider.setAnswerDelay('/token', holdBack);
  provider.setAnswerDelay('/token/revocation', () => random(0, 150));
  let running = true;
  const loop = async (tab: number, work: (app: FastifyInstance) => Promise<unknown>) => {
    // Bounded: the loops stop at the flag, and never run more than 60 calls each.
    for (let n = 0; running && n < 60; n++) {
      await work(apps[(tab + n) % apps.length]!);
      await sleep(random(0, 30));
    }
  };
  const loops = [
    loop(0, (app) => tabs.call(app, 'POST', '/auth/refresh')),
    loop(1, (app) => tabs.call(app, 'POST', '/auth/refresh')),
    loop(0, (app) => {
      clock.offsetMs += 61_000; // the access token is due: this call refreshes it proactively
      return tabs.call(app, 'GET', '/api/things');
    }),
    loop(1, (app) => tabs.call(app, 'GET', '/api/things')),
  ];

  await sleep(random(150, 700));
  let endedAt: number;
  switch (ending) {
    case 'logout': {
      await tabs.call(apps[apps.length - 1]!, 'POST', '/auth/logout');
      endedAt = Date.now();
      break;
    }
    case 'backchannel': {
      // Issued on the replicas' clock, which the API loop moves forward.
      const iat = Math.floor(now() / 1000);
      const response = await postLogoutToken(apps[apps.length - 1]!, await signLogoutToken(provider, { sid, iat, exp: iat + 120 }));
      expect(response.statusCode, response.body).toBe(200);
      endedAt = Date.now();
      break;
    }
    case 'idle': {
      endedAt = Date.now();
      clock.offsetMs += (IDLE_TIMEOUT_SECONDS + 60) * 1000;
      break;
    }
  }
  // Requests already on their way land after the end; then everything in flight settles.
  await sleep(random(50, 250));
  running = false;
  await Promise.all(loops);
  provider.setAnswerDelay('/token', 0);
  provider.setAnswerDelay('/token/revocation', 0);

  const servedAfterEnd = tabs.calls.filter((call) => call.sentAt > endedAt && call.status < 300).length;
  let acceptedCookies = 0;
  for (const cookie of tabs.everySessionCookie) {
    for (const app of apps) {
      const response = await app.inject({ method: 'GET', url: '/auth/user', headers: { cookie: `${SESSION}=${cookie}` } });
      if (response.statusCode !== 401) acceptedCookies++;
    }
  }

  const refreshes = provider.tokenRequests.slice(firstRequest).filter((r) => r.grantType === 'refresh_token');
  // After a logout none of the round's refresh tokens may work; after the other endings, none
  // that reached token-handler once the session had ended (earlier ones ended with the
  // provider's own session, or expire at the provider like any idle session's tokens).
  const mustBeDead = refreshes.filter((r) => ending === 'logout' || (r.answeredAt ?? 0) >= endedAt);
  const refreshTokens = mustBeDead.flatMap((r) => r.issued?.refresh_token ?? []);
  if (ending === 'logout') {
    const loginAnswer = provider.tokenRequests.slice(0, firstRequest).reverse().find((r) => r.grantType === 'authorization_code');
    refreshTokens.push(...(loginAnswer?.issued?.refresh_token ?? []));
  }
  let liveRefreshTokens = 0;
  for (const token of refreshTokens) if (await isTokenActive(provider, token)) liveRefreshTokens++;
  return { servedAfterEnd, acceptedCookies, liveRefreshTokens, refreshesDuringRound: refreshes.length };
}

const setups: StoreSetup[] = hasRedis ? ['cookie+redis', 'memory', 'redis'] : ['memory'];
const endings: Ending[] = ['logout', 'backchannel', 'idle'];
const totals = { rounds: 0, resurrected: 0, liveTokens: 0, refreshes: 0 };

describe('a session that ended stays ended, whatever was in flight', () => {
  afterAll(() => {
    // The figures for the record (README "Security"): rounds × stores, sessions resurrected.
    console.log(
      `session-end race: ${totals.rounds} rounds (${ROUNDS} per store and ending; stores ${setups.join(', ')}; endings ${endings.join(', ')}), ` +
        `${totals.refreshes} refreshes at the provider, sessions resurrected ${totals.resurrected}, live refresh tokens after the end ${totals.liveTokens}`,
    );
  });

  for (const setup of setups) {
    for (const ending of endings) {
      it(`store ${setup}: after a ${ending} during parallel refreshes, no cookie the browser ever had works and no later refresh token lives`, async () => {
        const apps = await replicas(setup);
        for (let i = 0; i < ROUNDS; i++) {
          const result = await round(apps, ending, `race-${setup}-${ending}-${i}`.replace('+', '-'));
          totals.rounds++;
          totals.refreshes += result.refreshesDuringRound;
          if (result.acceptedCookies > 0 || result.servedAfterEnd > 0) totals.resurrected++;
          totals.liveTokens += result.liveRefreshTokens;
          expect.soft(result.servedAfterEnd, `round ${i}: calls served as signed in after the ${ending}`).toBe(0);
          expect.soft(result.acceptedCookies, `round ${i}: cookies still accepted after the ${ending}`).toBe(0);
          expect.soft(result.liveRefreshTokens, `round ${i}: refresh tokens alive at the provider after the ${ending}`).toBe(0);
        }
      }, 60_000);
    }
  }
});
