/**
 * The soak's logout-during-refresh phase: fresh sessions each start a refresh (the
 * provider's answer held back 0.3–1.2 s after it has issued the tokens) and keep calling
 * the API on both instances, and while the refresh is in flight the user logs out on the
 * other instance. A session is resurrected when any call sent after its logout was served
 * as signed in, or any session cookie it ever received still works on either instance.
 */
import type { FastifyInstance } from 'fastify';
import { TestBrowser } from '../../test/support/bff.js';
import type { Child } from '../../bench/lib/rpc.js';

export interface LogoutPhaseInstance {
  name: string;
  app: FastifyInstance;
  base: string;
}

export interface LogoutPhaseResult {
  sessions: number;
  /** Logouts that landed while that session's refresh was still waiting for the provider. */
  logoutsDuringRefresh: number;
  /** Calls sent after the logout and served as signed in. */
  servedAfterLogout: number;
  /** Sessions with a call served after the logout, or a cookie still accepted afterwards. */
  resurrected: number;
  accounts: string[];
}

const SESSION_COOKIE = '__Host-th_session';
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const random = (min: number, max: number) => min + Math.random() * (max - min);

export async function logoutDuringRefresh(instances: LogoutPhaseInstance[], idp: Child, count: number, login: (index: number) => string): Promise<LogoutPhaseResult> {
  const [first, second] = [instances[0]!, instances[instances.length - 1]!];
  await idp.call('holdBackTokenAnswers', { minMs: 300, maxMs: 1200 });
  try {
    const outcomes = await Promise.all(Array.from({ length: count }, (_, index) => oneSession(first, second, login(index))));
    return {
      sessions: count,
      logoutsDuringRefresh: outcomes.filter((o) => o.logoutDuringRefresh).length,
      servedAfterLogout: outcomes.reduce((sum, o) => sum + o.servedAfterLogout, 0),
      resurrected: outcomes.filter((o) => o.servedAfterLogout > 0 || o.acceptedCookies > 0).length,
      accounts: outcomes.map((o) => o.account),
    };
  } finally {
    await idp.call('holdBackTokenAnswers', null);
  }
}

async function oneSession(first: LogoutPhaseInstance, second: LogoutPhaseInstance, account: string) {
  const browser = new TestBrowser(first.app);
  await browser.login({ login: account, returnTo: '/' });
  let cookie = browser.cookies.get(SESSION_COOKIE);
  browser.responses.length = 0;
  const everyCookie = new Set(cookie ? [cookie] : []);
  const calls: Array<{ sentAt: number; status: number }> = [];
  const call = async (instance: LogoutPhaseInstance, method: 'GET' | 'POST', path: string) => {
    const sentAt = Date.now();
    const response = await fetch(`${instance.base}${path}`, {
      method,
      headers: { 'x-csrf': '1', accept: 'application/json', ...(cookie ? { cookie: `${SESSION_COOKIE}=${cookie}` } : {}) },
      signal: AbortSignal.timeout(10_000),
    });
    await response.arrayBuffer();
    calls.push({ sentAt, status: response.status });
    for (const header of response.headers.getSetCookie()) {
      const [pair = ''] = header.split(';');
      if (!pair.startsWith(`${SESSION_COOKIE}=`)) continue;
      const value = pair.slice(SESSION_COOKIE.length + 1);
      cookie = value === '' || /max-age=0/i.test(header) ? undefined : value;
      if (cookie) everyCookie.add(cookie);
    }
    return response.status;
  };

  let refreshing = true;
  const refresh = call(first, 'POST', '/auth/refresh').finally(() => (refreshing = false));
  let running = true;
  const apiLoop = (async () => {
    for (let n = 0; running && n < 40; n++) {
      await call(n % 2 === 0 ? first : second, 'GET', `/api/soak/${account}/logout-phase`);
      await sleep(random(20, 60));
    }
  })();
  await sleep(random(100, 500));
  const logoutDuringRefresh = refreshing;
  await call(second, 'POST', '/auth/logout');
  const loggedOutAt = Date.now();
  await sleep(200);
  running = false;
  await Promise.all([refresh, apiLoop]);

  let acceptedCookies = 0;
  for (const value of everyCookie) {
    for (const instance of [first, second]) {
      const response = await instance.app.inject({ method: 'GET', url: '/auth/user', headers: { cookie: `${SESSION_COOKIE}=${value}` } });
      if (response.statusCode !== 401) acceptedCookies++;
    }
  }
  const servedAfterLogout = calls.filter((c) => c.sentAt > loggedOutAt && c.status < 300).length;
  return { account, logoutDuringRefresh, servedAfterLogout, acceptedCookies };
}
