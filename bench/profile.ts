/**
 * CPU profile of token-handler's hot path (an authenticated GET through /api) under load.
 *
 *   npx tsx bench/profile.ts            (≈ 1½ minutes; BENCH_PROFILE_SECONDS=10)
 *
 * token-handler runs in a child process (bench/lib/th-child.ts) that records a V8 CPU
 * profile (node:inspector — the sampler behind --cpu-prof) of exactly the load window,
 * first with the cookie store, then with the redis store (when Redis answers), then the
 * bare proxy for reference; then what-if runs (log level warn, metrics off) measured for CPU
 * per request only. Each run first measures CPU per request without the profiler (its
 * overhead would inflate it). Load: autocannon in this process (which hosts nothing else),
 * 16 connections. Profiles go to bench/results/*.cpuprofile (git-ignored) and are
 * summarised by bench/analyse-profile.ts; the summary is written to
 * bench/results/profile-latest.json. A micro-benchmark of sealing and unsealing a typical
 * session cookie gives the per-call cost behind the profile's crypto share.
 */
import { createHash } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import { Redis } from 'ioredis';
import { Sealer } from '../src/state/sealer.js';
import { analyse, formatAnalysis, type CpuProfile } from './analyse-profile.js';
import { sealData, unsealData } from 'iron-session';
import { spawnChild } from './lib/rpc.js';
import { API_PATH, SECRET, SESSION_COOKIE, browserHeaders, followSetCookie, randomPrefix, redisAnswers, startProviderAndUpstream } from './lib/stack.js';
import type { SessionRecord } from '../src/state/record.js';

const seconds = Number(process.env.BENCH_PROFILE_SECONDS ?? 10);
const connections = Number(process.env.BENCH_CONNECTIONS ?? 16);
const intervalUs = Number(process.env.BENCH_PROFILE_INTERVAL_US ?? 250);
const resultsDir = fileURLToPath(new URL('./results/', import.meta.url));
mkdirSync(resultsDir, { recursive: true });
const stamp = new Date().toISOString().replace(/[:.]/g, '-');
const t0 = Date.now();
const progress = (m: string) => console.log(`[${((Date.now() - t0) / 1000).toFixed(1).padStart(5)}s] ${m}`);

const providerChild = spawnChild('./provider-child.ts');
const upstreamChild = spawnChild('./upstream-child.ts');
const redisUp = await redisAnswers();
const redisPrefix = randomPrefix();
const summary: Record<string, unknown> = { date: new Date().toISOString(), node: process.version, cpu: cpus()[0]?.model, cores: cpus().length, seconds, connections, samplingIntervalUs: intervalUs };

try {
  const { provider, upstream } = await startProviderAndUpstream(providerChild, upstreamChild);
  const sealer = new Sealer([SECRET]);
  let cookieStoreCookie = '';
  let record: SessionRecord | null = null;

  type Target = { url: string; headers: Record<string, string> };
  type Run = { name: string; profile: boolean; note?: string; start: (child: ReturnType<typeof spawnChild>) => Promise<Target> };
  const th = (store: 'cookie' | 'memory' | 'redis', extra?: Record<string, unknown>) => async (child: ReturnType<typeof spawnChild>): Promise<Target> => {
    const { url, cookie } = await child.call<{ url: string; cookie: string }>('startTokenHandler', { provider, upstreamUrl: upstream.url, store, redisPrefix, ...(extra ? { extra } : {}) });
    if (store === 'cookie' && !extra) {
      cookieStoreCookie = cookie;
      record = await sealer.unseal<SessionRecord>(cookie.slice(SESSION_COOKIE.length + 1));
    }
    return { url: `${url}${API_PATH}`, headers: browserHeaders(cookie) };
  };
  const runs: Run[] = [
    { name: 'th-cookie', profile: true, start: th('cookie') },
    { name: 'th-memory', profile: false, start: th('memory') },
    ...(redisUp ? [{ name: 'th-redis', profile: true, start: th('redis') }] : []),
    {
      name: 'bare-proxy',
      profile: true,
      start: async (child) => {
        if (!record) throw new Error('no access token (the cookie-store run comes first)');
        const { url } = await child.call<{ url: string }>('startBareProxy', { upstreamUrl: upstream.url, bearer: record.accessToken });
        return { url: `${url}${API_PATH}`, headers: browserHeaders(cookieStoreCookie) };
      },
    },
    // What-if variants (CPU per request only): the cost of the per-request log line and of the metrics.
    { name: 'th-cookie logging.level=warn', profile: false, note: 'no per-request log line', start: th('cookie', { logging: { level: 'warn' } }) },
    {
      name: 'th-cookie logging.level=warn, metrics.enabled=false',
      profile: false,
      note: 'no per-request log line, no metrics',
      start: th('cookie', { logging: { level: 'warn' }, metrics: { enabled: false } }),
    },
  ];
  if (!redisUp) console.log('\n!!!!!!!! Redis does not answer at 127.0.0.1:6379: the redis-store profile is SKIPPED !!!!!!!!\n');

  // Phase 1: CPU per request of every variant, without the profiler (its overhead would inflate
  // it), in short windows alternating between the variants so machine noise hits all alike.
  const started: Array<{ run: Run; child: ReturnType<typeof spawnChild>; target: Target; cpuUs: number[]; requests: number[]; rps: number[] }> = [];
  const profiles: Record<string, unknown> = {};
  try {
    for (const run of runs) {
      const child = spawnChild('./th-child.ts');
      started.push({ run, child, target: await run.start(child), cpuUs: [], requests: [], rps: [] });
    }
    for (const entry of started) await fire(entry.target.url, entry.target.headers, 2); // warm-up
    const rounds = Number(process.env.BENCH_PROFILE_ROUNDS ?? 4);
    for (let round = 0; round < rounds; round++) {
      for (const entry of [...started.slice(round % started.length), ...started.slice(0, round % started.length)]) {
        await entry.child.call('cpuStart');
        const load = await fire(entry.target.url, entry.target.headers, 2);
        const cpu = await entry.child.call<{ userMs: number; systemMs: number }>('cpuStop');
        entry.cpuUs.push((cpu.userMs + cpu.systemMs) * 1000);
        entry.requests.push(load.requests);
        entry.rps.push(load.rps);
      }
      progress(`CPU round ${round + 1}/${rounds}: ${started.map((e) => `${e.run.name} ${Math.round(e.cpuUs.at(-1)! / e.requests.at(-1)!)} µs/req`).join(', ')}`);
    }
    const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
    const cpuRows = started.map((e) => ({
      run: e.run.name,
      ...(e.run.note ? { note: e.run.note } : {}),
      cpuUsPerRequest: Math.round(e.cpuUs.reduce((a, b) => a + b, 0) / e.requests.reduce((a, b) => a + b, 0)),
      cpuUsPerRequestMedianWindow: Math.round(median(e.cpuUs.map((us, i) => us / e.requests[i]!))),
      // Noise only ever adds CPU time: the least disturbed window is the best estimate of the intrinsic cost.
      cpuUsPerRequestMinWindow: Math.round(Math.min(...e.cpuUs.map((us, i) => us / e.requests[i]!))),
      rps: Math.round(e.requests.reduce((a, b) => a + b, 0) / (2 * e.requests.length)),
    }));
    console.log('\nCPU per request of the process serving it (user+system, all threads), no profiler:');
    for (const row of cpuRows) {
      console.log(
        `  all windows ${String(row.cpuUsPerRequest).padStart(5)} µs, median window ${String(row.cpuUsPerRequestMedianWindow).padStart(5)} µs, ` +
          `least disturbed ${String(row.cpuUsPerRequestMinWindow).padStart(5)} µs  ${String(row.rps).padStart(5)} req/s  ${row.run}${row.note ? ` — ${row.note}` : ''}`,
      );
    }
    console.log('');
    summary.cpuPerRequest = cpuRows;

    // Phase 2: CPU profiles of the main variants.
    for (const entry of started.filter((e) => e.run.profile)) {
      const { run, child, target } = entry;
      await child.call('profileStart', { intervalUs });
      const result = await fire(target.url, target.headers, seconds);
      const file = `${resultsDir}${run.name}-${stamp}.cpuprofile`;
      const cpu = await child.call<{ userMs: number; systemMs: number; wallMs: number; eventLoopUtilization: number }>('profileStop', { file });
      const analysis = analyse(JSON.parse(readFileSync(file, 'utf8')) as CpuProfile, 15);
      const mainThreadPerRequestUs = (analysis.activeMs * 1000) / result.requests;
      progress(`${run.name} under the profiler (${intervalUs} µs sampling): ${Math.round(result.rps)} req/s, main thread ${mainThreadPerRequestUs.toFixed(0)} µs/request; ${file.slice(resultsDir.length)}`);
      console.log(`\n${formatAnalysis(analysis, run.name)}\n`);
      profiles[run.name] = { file: file.slice(resultsDir.length), rps: result.rps, requests: result.requests, non2xx: result.non2xx, cpu, mainThreadPerRequestUs, analysis };
    }
  } finally {
    for (const { child } of started) {
      await child.call('stop').catch(() => undefined);
      await child.stop();
    }
  }

  summary.profiles = profiles;

  // What one seal / unseal of a typical session costs (the cookie store does one unseal per request).
  if (record) summary.sealing = await sealingCost(sealer, record);
} finally {
  if (redisUp) {
    const redis = new Redis('redis://127.0.0.1:6379');
    const keys: string[] = [];
    let cursor = '0';
    do {
      const [next, batch] = await redis.scan(cursor, 'MATCH', `${redisPrefix}*`, 'COUNT', 1000);
      cursor = next;
      keys.push(...batch);
    } while (cursor !== '0');
    if (keys.length) await redis.unlink(...keys);
    redis.disconnect();
  }
  await upstreamChild.call('stop').catch(() => undefined);
  await providerChild.call('stop').catch(() => undefined);
  await upstreamChild.stop();
  await providerChild.stop();
}

writeFileSync(`${resultsDir}profile-latest.json`, `${JSON.stringify(summary, null, 2)}\n`);
progress('summary written to bench/results/profile-latest.json');

async function fire(url: string, headers: Record<string, string>, durationSeconds: number): Promise<{ rps: number; requests: number; non2xx: number }> {
  // Like a browser, keep the session cookie token-handler sends back (its idle timeout slides once a minute).
  await followSetCookie(url, headers);
  return new Promise((resolve, reject) => {
    autocannon({ url, headers, connections, pipelining: 1, duration: durationSeconds }, (err, result) => {
      if (err) reject(err);
      else resolve({ rps: result.requests.total / result.duration, requests: result.requests.total, non2xx: result.non2xx });
    });
  });
}

async function sealingCost(sealer: Sealer, record: SessionRecord) {
  const sealed = await sealer.seal(record, 28_800);
  const measure = async (label: string, op: () => Promise<unknown>, n: number, concurrency: number) => {
    for (let i = 0; i < 200; i++) await op();
    const cpu = process.cpuUsage();
    const start = performance.now();
    let next = 0;
    await Promise.all(Array.from({ length: concurrency }, async () => {
      while (next++ < n) await op();
    }));
    const wallMs = performance.now() - start;
    const used = process.cpuUsage(cpu);
    const out = { op: label, n, concurrency, wallUsPerOp: (wallMs * 1000) / n, cpuUsPerOp: (used.user + used.system) / n, opsPerSecond: n / (wallMs / 1000) };
    progress(`${label} (concurrency ${concurrency}): ${out.wallUsPerOp.toFixed(0)} µs wall/op, ${out.cpuUsPerOp.toFixed(0)} µs CPU/op (all threads), ${Math.round(out.opsPerSecond)} ops/s`);
    return out;
  };
  // iron-session (WebCrypto), which token-handler sealed with before src/state/iron.ts, for scale.
  const id = String(createHash('sha256').update(SECRET).digest().readUInt32BE(0));
  const password = { [id]: SECRET };
  const theirs = await sealData(record as unknown as Record<string, unknown>, { password, ttl: 28_800 });
  const compatible =
    isDeepStrictEqual(sealer.unseal(theirs), record) && isDeepStrictEqual(await unsealData(sealed, { password, ttl: 28_800 }), record);
  progress(`token-handler's seals and iron-session's ${compatible ? 'open each other' : 'do NOT open each other (figures below are not comparable)'}`);
  const cache = new Map<string, SessionRecord>([[sealed, record]]);
  return {
    sealedBytes: sealed.length,
    ironSessionCompatible: compatible,
    results: [
      await measure('iron-session unseal (WebCrypto)', () => unsealData(theirs, { password, ttl: 28_800 }), 3000, 1),
      await measure('iron-session seal (WebCrypto)', () => sealData(record as unknown as Record<string, unknown>, { password, ttl: 28_800 }), 3000, 1),
      await measure('Map lookup keyed by a fresh copy of the cookie value', async () => cache.get(Buffer.from(sealed, 'latin1').toString('latin1')), 3000, 1),
      await measure('unseal typical session cookie (src/state/iron.ts, node:crypto)', async () => sealer.unseal(sealed), 3000, 1),
      await measure('seal typical session record (src/state/iron.ts, node:crypto)', () => sealer.seal(record, 28_800), 3000, 1),
      await measure('JSON.parse(JSON.stringify(record)) (for scale)', async () => JSON.parse(JSON.stringify(record)), 3000, 1),
    ],
  };
}
