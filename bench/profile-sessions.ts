/**
 * CPU profile of token-handler serving many distinct sessions (the production phase's
 * `th-<store>@N` targets), to find what a request costs once the sessions no longer fit
 * one cookie's caches.
 *
 *   npm run build && npx tsx bench/profile-sessions.ts      (≈ 1 minute per store)
 *   BENCH_PROFILE_STORES=redis BENCH_PROFILE_SESSIONS=10000 npx tsx bench/profile-sessions.ts
 *
 * Per store: token-handler in a child (bench/lib/th-child.ts) on the no-work upstream, a
 * real login for a realistic session record, N synthetic sessions seeded into it, one
 * request per session (a process that has seen its users), then the load (autocannon in this
 * process, the next session's cookie on every request, cookies it sets kept per session):
 * CPU per request without the profiler, then a V8 CPU profile of the load window,
 * summarised by bench/analyse-profile.ts. Profiles go to bench/results/ (git-ignored).
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import { Redis } from 'ioredis';
import { analyse, formatAnalysis, type CpuProfile } from './analyse-profile.js';
import { realisticClaims } from './lib/claims.js';
import { spawnChild, type Child } from './lib/rpc.js';
import { REDIRECT_URI, SECRET, SESSION_COOKIE, browserHeaders, randomPrefix, redisAnswers, type ProviderInfo, type Store } from './lib/stack.js';
import { Sealer } from '../src/state/sealer.js';
import type { SessionRecord } from '../src/state/record.js';

const seconds = Number(process.env.BENCH_PROFILE_SECONDS ?? 8);
const connections = Number(process.env.BENCH_CONNECTIONS ?? 50);
const sessions = Number(process.env.BENCH_PROFILE_SESSIONS ?? 10_000);
const intervalUs = Number(process.env.BENCH_PROFILE_INTERVAL_US ?? 250);
/** Configuration merged into every token-handler's, e.g. '{"session":{"redis":{"localCacheEntries":20000}}}'. */
const extra = process.env.BENCH_PROFILE_EXTRA ? (JSON.parse(process.env.BENCH_PROFILE_EXTRA) as Record<string, unknown>) : undefined;
const wanted = (process.env.BENCH_PROFILE_STORES ?? 'cookie,memory,redis').split(',') as Store[];
const resultsDir = fileURLToPath(new URL('./results/', import.meta.url));
mkdirSync(resultsDir, { recursive: true });
const stamp = new Date().toISOString().replace(/[:.]/g, '-');
const t0 = Date.now();
const progress = (m: string) => console.log(`[${((Date.now() - t0) / 1000).toFixed(1).padStart(5)}s] ${m}`);

const redisUp = await redisAnswers();
const redisPrefix = randomPrefix();
const stores = wanted.filter((store) => store !== 'redis' || redisUp);
if (wanted.includes('redis') && !redisUp) console.log('\n!!!!!!!! Redis does not answer at 127.0.0.1:6379: the redis store is SKIPPED !!!!!!!!\n');

const children: Child[] = [];
const spawn = (file: string) => {
  const child = spawnChild(file);
  children.push(child);
  return child;
};
const summary: Record<string, unknown> = { date: new Date().toISOString(), node: process.version, sessions, connections, seconds };

try {
  const provider = await spawn('./provider-child.ts').call<ProviderInfo>('start', { redirectUris: [REDIRECT_URI], accessTokenTtlSeconds: 3600, extraClaims: realisticClaims });
  const cheap = await spawn('./upstream-child.ts').call<{ url: string }>('startCheap');
  const sealer = new Sealer([SECRET]);
  let template: SessionRecord | null = null;

  for (const store of ['cookie' as const, ...stores.filter((s) => s !== 'cookie')]) {
    const child = spawn('./th-child.ts');
    const { url, cookie } = await child.call<{ url: string; cookie: string }>('startTokenHandler', {
      provider, upstreamUrl: cheap.url, store, redisPrefix: `${redisPrefix}${store}:`, userName: `jane.doe.${store}`, ...(extra ? { extra } : {}),
    });
    template ??= await sealer.unseal<SessionRecord>(cookie.slice(SESSION_COOKIE.length + 1));
    if (!template) throw new Error('could not unseal the cookie-store login');
    if (!stores.includes(store)) {
      await child.call('stop');
      continue;
    }
    const seeded = await child.call<{ cookies: string[] }>('seedSessions', { count: sessions, template });
    const cookies = seeded.cookies;
    const target = `${url}/api/items`;
    progress(`${store}: ${sessions} sessions seeded; one request each`);
    await fire(target, cookies, { amount: cookies.length });
    await fire(target, cookies, { duration: 2 });
    const callsBefore = store === 'redis' ? await redisCalls() : undefined;
    await child.call('cpuStart');
    const plain = await fire(target, cookies, { duration: 4 });
    const cpu = await child.call<{ userMs: number; systemMs: number }>('cpuStop');
    if (callsBefore) {
      const after = await redisCalls();
      const perRequest = Object.entries(after).map(([command, calls]) => [command, (calls - (callsBefore[command] ?? 0)) / plain.requests] as const).filter(([, n]) => n >= 0.001);
      progress(`${store}@${sessions}: Redis commands per request: ${perRequest.map(([c, n]) => `${c} ${n.toFixed(3)}`).join(', ')}`);
    }
    const cpuUsPerRequest = ((cpu.userMs + cpu.systemMs) * 1000) / plain.requests;
    progress(`${store}@${sessions}: ${Math.round(plain.rps)} req/s, ${cpuUsPerRequest.toFixed(0)} µs CPU/request (no profiler), non-2xx ${plain.non2xx}`);
    await child.call('profileStart', { intervalUs });
    const profiled = await fire(target, cookies, { duration: seconds });
    const file = `${resultsDir}sessions-${store}-${sessions}-${stamp}.cpuprofile`;
    await child.call('profileStop', { file });
    const analysis = analyse(JSON.parse(readFileSync(file, 'utf8')) as CpuProfile, 20);
    console.log(`\n${formatAnalysis(analysis, `${store}@${sessions} (${Math.round(profiled.rps)} req/s under the profiler)`)}\n`);
    summary[store] = { rps: plain.rps, cpuUsPerRequest, non2xx: plain.non2xx, file: file.slice(resultsDir.length), analysis };
    await child.call('stop');
  }
} finally {
  if (redisUp) {
    const redis = new Redis('redis://127.0.0.1:6379');
    let cursor = '0';
    do {
      const [next, batch] = await redis.scan(cursor, 'MATCH', `${redisPrefix}*`, 'COUNT', 1000);
      cursor = next;
      if (batch.length) await redis.unlink(...batch);
    } while (cursor !== '0');
    redis.disconnect();
  }
  for (const child of children) await child.stop();
}
writeFileSync(`${resultsDir}profile-sessions-latest.json`, `${JSON.stringify(summary, null, 2)}\n`);

/** Calls per Redis command so far (INFO commandstats: every client of the server, the bench's cleanup aside). */
async function redisCalls(): Promise<Record<string, number>> {
  const redis = new Redis('redis://127.0.0.1:6379');
  const info = await redis.info('commandstats');
  redis.disconnect();
  return Object.fromEntries([...info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)].map((m) => [m[1]!, Number(m[2])]));
}

/** Load rotating over the sessions' cookies; a cookie a response sets replaces that session's. */
function fire(url: string, cookies: string[], bound: { duration: number } | { amount: number }): Promise<{ rps: number; requests: number; non2xx: number }> {
  let next = 0;
  const request = {
    method: 'GET',
    setupRequest: (req: autocannon.Request, context: Record<string, unknown>) => {
      const index = next;
      next = next + 1 === cookies.length ? 0 : next + 1;
      context.index = index;
      return { ...req, headers: browserHeaders(cookies[index]!) };
    },
    onResponse: (_status: number, _body: string, context: Record<string, unknown>, headers?: Record<string, string | string[]>) => {
      const setCookie = headers?.['set-cookie'];
      if (!setCookie || typeof context.index !== 'number') return;
      for (const value of Array.isArray(setCookie) ? setCookie : [setCookie]) {
        const pair = value.slice(0, value.indexOf(';'));
        if (pair.startsWith(`${SESSION_COOKIE}=`) && pair.length > SESSION_COOKIE.length + 1) cookies[context.index] = pair;
      }
    },
  } as unknown as autocannon.Request;
  return new Promise((resolve, reject) => {
    autocannon({ url, connections, pipelining: 1, requests: [request], ...bound }, (err, result) => {
      if (err) reject(err);
      else resolve({ rps: result.requests.total / result.duration, requests: result.requests.total, non2xx: result.non2xx });
    });
  });
}
