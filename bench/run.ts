/**
 * `npm run bench`: token-handler side by side with what users would otherwise run, in
 * one run on one machine (issue 7; stores from issue 4).
 *
 *  1. Throughput and latency, targets alternated round-robin in short slices so machine
 *     noise hits all alike: the upstream directly, a bare @fastify/http-proxy, and
 *     token-handler with the cookie, memory and redis stores.
 *  2. Refresh storms: 500 parallel requests of one expired session; 1,000 sessions
 *     expiring together; cookie store and redis store (two instances sharing Redis).
 *  3. Production-like (bench/production.ts, issue 28): a realistic ~3 KB session cookie,
 *     1 / 1,000 / 10,000 sessions per store, 50 and 16 connections, a no-work upstream beside
 *     the introspecting one, nginx and Apache + mod_auth_openidc beside, tracing off and on.
 *  4. Memory: RSS and heap per session in the memory store (10k, 100k), bytes per
 *     session in Redis, sealed cookie sizes.
 *  4. WebSockets: messages per second through token-handler vs directly to the upstream,
 *     same run, alternated, and the latency token-handler adds per message.
 *
 * Processes: this one orchestrates (and hosts the storm's first token-handler replica);
 * every proxy under test, the provider, the upstream, the load generator and the memory
 * probe run in child processes of their own (bench/lib/*-child.ts). Everything listens on
 * 127.0.0.1. Results: bench/results/<date>.json, latest.json, latest.md.
 *
 * Knobs (environment): BENCH_CONNECTIONS (16), BENCH_ROUNDS (5), BENCH_SLICE_SECONDS (2), BENCH_WARMUP_SECONDS (3),
 * BENCH_FIXED_RATE (300 req/s over 1 connection) and BENCH_FIXED_RATE_ROUNDS (2) for latency without queueing,
 * BENCH_STORM_REQUESTS (500), BENCH_STORM_SESSIONS (1000), BENCH_MEMORY_SESSIONS
 * ("10000,100000"), BENCH_REDIS_SESSIONS (1000), BENCH_SKIP ("throughput,storm,production,memory,websocket"),
 * the production phase's own knobs (bench/production.ts), BENCH_WS_SOCKETS (16), BENCH_WS_ROUNDS (3),
 * BENCH_BUDGET_SECONDS (170: the many-session storms log in fewer sessions, loudly, when
 * the machine is too slow to do 1,000 logins per store within it).
 */
import { execFileSync } from 'node:child_process';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, totalmem } from 'node:os';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { Sealer } from '../src/state/sealer.js';
import { RedisSessionStore } from '../src/state/redis/session-store.js';
import { KeyLayout } from '../src/state/redis/keys.js';
import { spawnChild, type Child, type SpawnOptions } from './lib/rpc.js';
import { productionMarkdown, productionPhase } from './production.js';
import { API_PATH, SECRET, SESSION_COOKIE, UPSTREAM_PATH, browserHeaders, followSetCookie, login, loginMany, randomPrefix, redisAnswers, warnOnce, DevNullLog, lagSummary, startProviderAndUpstream, startTokenHandler, tokenHandlerBuild, type Store, PUBLIC_URL } from './lib/stack.js';
import { syntheticRecord, type TokenProfile } from './lib/records.js';
import { bytes, fmt, markdownTable, percentile, round, table } from './lib/stats.js';
import type { SessionRecord } from '../src/state/record.js';

// ---------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------

const env = process.env;
const num = (name: string, fallback: number) => (env[name] ? Number(env[name]) : fallback);
const skip = new Set((env.BENCH_SKIP ?? '').split(',').filter(Boolean));

const settings = {
  connections: num('BENCH_CONNECTIONS', 16),
  rounds: num('BENCH_ROUNDS', 5),
  /**
   * Latency without queueing: one connection, one request at a time, at a fixed rate well
   * below every target's capacity. At full load (16 connections) latency is mostly queueing
   * (requests in flight / throughput); here it is the time one request takes.
   */
  fixedRate: num('BENCH_FIXED_RATE', 300),
  fixedRateConnections: 1,
  fixedRateRounds: num('BENCH_FIXED_RATE_ROUNDS', 2),
  /** Whole seconds: autocannon ends a run on its 1-second sampling tick. */
  sliceSeconds: num('BENCH_SLICE_SECONDS', 2),
  /**
   * Load before measuring, per target: V8 needs several seconds under load to optimise a
   * code path on a shared 2-core machine (measured: after a 1-s warm-up, token-handler's
   * rate relative to the bare proxy's rose from 0.55–0.7 to its steady value over the next
   * three 2-s slices). 3 s keeps the run, storms included, within its time budget; the
   * per-round median discounts a first round that is still a little slow.
   */
  warmupSeconds: num('BENCH_WARMUP_SECONDS', 3),
  pipelining: 1,
  accessTokenTtlSeconds: 900,
  stormRequests: num('BENCH_STORM_REQUESTS', 500),
  stormSessions: num('BENCH_STORM_SESSIONS', 1000),
  /** Session i sends 2 + (i % 2) parallel requests: 2.5 on average. */
  requestsPerSession: '2-3',
  loginConcurrency: 50,
  memorySessions: (env.BENCH_MEMORY_SESSIONS ?? '10000,100000').split(',').map(Number),
  redisSessions: num('BENCH_REDIS_SESSIONS', 1000),
  logging: 'info (token-handler default) to /dev/null, synchronous writes like pino stdout',
  budgetSeconds: num('BENCH_BUDGET_SECONDS', 170),
};

// token-handler's own deprecation notices would interleave with the progress lines: each kind once.
warnOnce();
// A missing or stale dist/ stops the run here, not in a child process after the setup.
tokenHandlerBuild();

const started = Date.now();
const elapsed = () => `${((Date.now() - started) / 1000).toFixed(1).padStart(5)}s`;
const progress = (message: string) => console.log(`[${elapsed()}] ${message}`);
const loud = (message: string) => console.log(`\n[${elapsed()}] !!!!!!!! ${message} !!!!!!!!\n`);

const repoRoot = fileURLToPath(new URL('..', import.meta.url));

function git(args: string[]): string {
  try {
    return execFileSync('git', args, { cwd: repoRoot, encoding: 'utf8' }).trim();
  } catch {
    return 'unknown';
  }
}

// ---------------------------------------------------------------------------
// Children
// ---------------------------------------------------------------------------

const children: Child[] = [];
function child(file: string, options: SpawnOptions = {}): Child {
  const c = spawnChild(file, options);
  children.push(c);
  return c;
}

interface TokenStats {
  stats: Record<string, number>;
  serverErrors: number;
}

function diffStats(before: TokenStats, after: TokenStats): { refreshOk: number; refreshFailed: number; other: Record<string, number> } {
  let refreshOk = 0;
  let refreshFailed = 0;
  const other: Record<string, number> = {};
  for (const [key, value] of Object.entries(after.stats)) {
    const delta = value - (before.stats[key] ?? 0);
    if (delta === 0) continue;
    if (key === 'refresh_token:ok') refreshOk += delta;
    else if (key.startsWith('refresh_token:')) refreshFailed += delta;
    else other[key] = delta;
  }
  return { refreshOk, refreshFailed, other };
}

/** The session cookie the load generator's jar ended a slice with: the next slice starts from it, as a browser would. */
function keepCookie(target: { headers: Record<string, string> }, cookie: string | undefined): void {
  if (cookie) target.headers.cookie = cookie;
}

// ---------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------

const cpuInfo = cpus();
const machine = {
  node: process.version,
  v8: process.versions.v8,
  platform: `${process.platform} ${process.arch}`,
  cpuModel: cpuInfo[0]?.model ?? 'unknown',
  cpuMHz: cpuInfo[0]?.speed ?? 0,
  cores: cpuInfo.length,
  totalMemory: totalmem(),
  loadAverageAtStart: loadavg().map((l) => round(l, 2)),
};
const source = { commit: git(['rev-parse', '--short', 'HEAD']), srcChanges: git(['status', '--porcelain', '--', 'src']).split('\n').filter(Boolean).length };

console.log(`token-handler benchmark — node ${machine.node}, ${machine.cores} × ${machine.cpuModel}, load ${machine.loadAverageAtStart.join(' ')}`);
console.log(`commit ${source.commit}${source.srcChanges ? ` (+${source.srcChanges} uncommitted change(s) under src/)` : ''}`);

const redisUp = await redisAnswers();
if (!redisUp) loud('Redis does not answer PING at 127.0.0.1:6379: the redis store is SKIPPED (throughput, storm, bytes per session)');
const redisPrefix = randomPrefix();
const stores: Store[] = redisUp ? ['cookie', 'memory', 'redis'] : ['cookie', 'memory'];

progress('starting the provider, the upstream and the load generator (child processes)');
const providerChild = child('./provider-child.ts');
const upstreamChild = child('./upstream-child.ts');
const load = child('./load-child.ts');
const { provider, upstream } = await startProviderAndUpstream(providerChild, upstreamChild, settings.accessTokenTtlSeconds);
progress(`provider ${provider.issuer}, upstream ${upstream.url}`);

const sealer = new Sealer([SECRET]);
const results: Record<string, unknown> = {};
let template: SessionRecord | undefined;
let redis: Redis | undefined;
if (redisUp) redis = new Redis('redis://127.0.0.1:6379', { lazyConnect: false, maxRetriesPerRequest: 1 });

try {
  // -------------------------------------------------------------------------
  // 1. Throughput
  // -------------------------------------------------------------------------
  // Every proxy under test runs in a process of its own, as in production (one token-handler per
  // process): its CPU time is measured there, and nothing else shares its event loop or heap.
  const servers: Array<{ name: string; child: Child }> = [];
  const cookies = new Map<Store, string>();
  const urls = new Map<string, string>();
  await Promise.all(
    stores.map(async (store) => {
      const server = child('./th-child.ts');
      servers.push({ name: `th-${store}`, child: server });
      const { url, cookie } = await server.call<{ url: string; cookie: string }>('startTokenHandler', { provider, upstreamUrl: upstream.url, store, redisPrefix, userName: `bench-${store}` });
      urls.set(`th-${store}`, url);
      cookies.set(store, cookie);
    }),
  );
  const cookieStoreCookie = cookies.get('cookie')!;
  template = await sealer.unseal<SessionRecord>(cookieStoreCookie.slice(SESSION_COOKIE.length + 1)) ?? undefined;
  if (!template) throw new Error('could not unseal the cookie-store session (secret mismatch?)');
  progress(`logged in one session per store (${stores.join(', ')}); access token ${template.accessToken.length} chars, expires in ${Math.round((template.accessTokenExpiresAt - Date.now()) / 1000)} s`);

  if (!skip.has('throughput')) {
    const bareServer = child('./th-child.ts');
    servers.push({ name: 'bare-proxy', child: bareServer });
    urls.set('bare-proxy', (await bareServer.call<{ url: string }>('startBareProxy', { upstreamUrl: upstream.url, bearer: template.accessToken })).url);
    const serverOf = new Map(servers.map((s) => [s.name, s.child]));
    const targets: Array<{ name: string; url: string; headers: Record<string, string> }> = [
      { name: 'direct', url: `${upstream.url}${UPSTREAM_PATH}`, headers: { authorization: `Bearer ${template.accessToken}`, accept: 'application/json' } },
      { name: 'bare-proxy', url: `${urls.get('bare-proxy')!}${API_PATH}`, headers: browserHeaders(cookieStoreCookie) },
      ...stores.map((store) => ({ name: `th-${store}`, url: `${urls.get(`th-${store}`)!}${API_PATH}`, headers: browserHeaders(cookies.get(store)!) })),
    ];
    const tokensBefore = await providerChild.call<TokenStats>('tokenStats');
    progress(`throughput: ${targets.length} targets × ${settings.rounds} rounds × ${settings.sliceSeconds} s, ${settings.connections} connections (+${settings.warmupSeconds} s warm-up each)`);
    for (const target of targets) {
      if (target.name.startsWith('th-')) await followSetCookie(target.url, target.headers);
      const warm = await load.call<{ rps: number; non2xx: number; errors: number; cookie?: string }>('slice', {
        target: target.name, url: target.url, headers: target.headers, connections: settings.connections, durationSeconds: settings.warmupSeconds, warmup: true, sessionCookie: SESSION_COOKIE,
      });
      keepCookie(target, warm.cookie);
      if (warm.non2xx > 0 || warm.errors > 0) loud(`${target.name}: warm-up saw ${warm.non2xx} non-2xx and ${warm.errors} errors`);
    }
    /** CPU time of each proxy's process per target. */
    const cpuByTarget: Record<string, { us: number; requests: number }> = {};
    /** req/s of every target in each round: slices of one round ran within seconds of each other. */
    const rounds: Array<Record<string, number>> = [];
    for (let round_ = 0; round_ < settings.rounds; round_++) {
      // Rotate the order every round so no target always runs right after the same neighbour.
      const order = targets.map((_, i) => targets[(i + round_) % targets.length]!);
      const line: string[] = [];
      const roundRps: Record<string, number> = {};
      for (const target of order) {
        if (target.name.startsWith('th-')) await followSetCookie(target.url, target.headers);
        const server = serverOf.get(target.name);
        await server?.call('cpuStart');
        const slice = await load.call<{ rps: number; p99: number; non2xx: number; requests: number; cookie?: string }>('slice', {
          target: target.name, url: target.url, headers: target.headers, connections: settings.connections, durationSeconds: settings.sliceSeconds, sessionCookie: SESSION_COOKIE,
        });
        keepCookie(target, slice.cookie);
        if (server) {
          // CPU time of the proxy's own process: all its threads (the crypto thread pool too).
          const cpu = await server.call<{ userMs: number; systemMs: number }>('cpuStop');
          const cpuTotal = (cpuByTarget[target.name] ??= { us: 0, requests: 0 });
          cpuTotal.us += (cpu.userMs + cpu.systemMs) * 1000;
          cpuTotal.requests += slice.requests;
        }
        roundRps[target.name] = slice.rps;
        line.push(`${target.name} ${Math.round(slice.rps)}/s${slice.non2xx ? ` (${slice.non2xx} non-2xx!)` : ''}`);
      }
      rounds.push(roundRps);
      progress(`round ${round_ + 1}/${settings.rounds}: ${line.join(', ')} (load average ${loadavg()[0]!.toFixed(1)})`);
    }
    progress(`latency, one request at a time: ${settings.fixedRate} req/s over ${settings.fixedRateConnections} connection, ${settings.fixedRateRounds} rounds × ${settings.sliceSeconds} s per target`);
    for (let round_ = 0; round_ < settings.fixedRateRounds; round_++) {
      const order = targets.map((_, i) => targets[(i + round_ + 1) % targets.length]!);
      for (const target of order) {
        if (target.name.startsWith('th-')) await followSetCookie(target.url, target.headers);
        const slice = await load.call<{ cookie?: string }>('slice', {
          target: `${target.name}@rate`, url: target.url, headers: target.headers, connections: settings.fixedRateConnections,
          durationSeconds: settings.sliceSeconds, overallRate: settings.fixedRate, sessionCookie: SESSION_COOKIE,
        });
        keepCookie(target, slice.cookie);
      }
    }
    const tokensAfter = await providerChild.call<TokenStats>('tokenStats');
    const refreshesDuringThroughput = diffStats(tokensBefore, tokensAfter);

    type Summary = { rps: number; p50: number; p90: number; p99: number; max: number; requests: number; seconds: number; non2xx: number; errors: number; sliceRpsMedian: number; sliceP99Median: number; slices: unknown[] };
    const summaries: Record<string, Summary> = {};
    for (const target of targets) summaries[target.name] = (await load.call<Summary>('summary', { target: target.name }))!;
    const bareSummary = summaries['bare-proxy']!;
    const directSummary = summaries.direct!;
    const rows: Array<Record<string, unknown>> = targets.map((target) => {
      const s = summaries[target.name]!;
      const isTh = target.name.startsWith('th-');
      return {
        target: target.name,
        rps: round(s.rps, 0),
        p50Ms: round(s.p50, 3),
        p90Ms: round(s.p90, 3),
        p99Ms: round(s.p99, 3),
        maxMs: round(s.max, 3),
        requests: s.requests,
        non2xx: s.non2xx,
        errors: s.errors,
        sliceRps: (s.slices as Array<{ rps: number }>).map((x) => round(x.rps, 0)),
        vsBareProxy: round(s.rps / bareSummary.rps, 3),
        vsDirect: round(s.rps / directSummary.rps, 3),
        ...(isTh ? { addedP50Ms: round(s.p50 - bareSummary.p50, 3), addedP99Ms: round(s.p99 - bareSummary.p99, 3) } : {}),
        ...(target.name !== 'direct' && cpuByTarget[target.name]
          ? { cpuUsPerRequest: round(cpuByTarget[target.name]!.us / cpuByTarget[target.name]!.requests, 0) }
          : {}),
      };
    });
    console.log(`\nThroughput and latency (${settings.connections} connections, ${settings.rounds} × ${settings.sliceSeconds} s per target, pooled)\n`);
    console.log(
      table(
        ['target', 'req/s', 'p50 ms', 'p99 ms', 'vs bare', 'vs direct', '+p50 ms', '+p99 ms', 'CPU µs/req', 'non-2xx', 'slices req/s'],
        rows.map((r) => [
          String(r.target), String(r.rps), fmt(r.p50Ms as number, 2), fmt(r.p99Ms as number, 2), fmt(r.vsBareProxy as number, 3), fmt(r.vsDirect as number, 3),
          r.addedP50Ms === undefined ? '' : fmt(r.addedP50Ms as number, 2), r.addedP99Ms === undefined ? '' : fmt(r.addedP99Ms as number, 2),
          r.cpuUsPerRequest === undefined ? '' : String(r.cpuUsPerRequest),
          String(Number(r.non2xx) + Number(r.errors)), (r.sliceRps as number[]).join(' '),
        ]),
      ),
    );
    console.log(`\nrefresh calls during the throughput phase: ${refreshesDuringThroughput.refreshOk + refreshesDuringThroughput.refreshFailed} (must be 0)`);
    for (const r of rows) if (Number(r.non2xx) + Number(r.errors) > 0) loud(`${String(r.target)}: ${String(r.non2xx)} non-2xx and ${String(r.errors)} errors during measurement`);
    // A second view, less sensitive to a noisy slice: each round's ratio (neighbouring slices), median over rounds.
    const median = (values: number[]) => {
      const sorted = [...values].sort((a, b) => a - b);
      const mid = Math.floor(sorted.length / 2);
      return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
    };
    const pairedRatios: Record<string, { vsBareProxy: number; vsDirect: number }> = {};
    for (const target of targets.filter((t) => t.name.startsWith('th-'))) {
      pairedRatios[target.name] = {
        vsBareProxy: round(median(rounds.map((r) => r[target.name]! / r['bare-proxy']!)), 3),
        vsDirect: round(median(rounds.map((r) => r[target.name]! / r.direct!)), 3),
      };
    }
    console.log(
      `per-round ratios, median over rounds: ${Object.entries(pairedRatios)
        .map(([name, r]) => `${name} ${fmt(r.vsBareProxy, 2)} of bare proxy, ${fmt(r.vsDirect, 2)} of direct`)
        .join('; ')}`,
    );
    const atRate: Array<Record<string, unknown>> = [];
    const bareAtRate = (await load.call<Summary | null>('summary', { target: 'bare-proxy@rate' }))!;
    for (const target of targets) {
      const s = (await load.call<Summary | null>('summary', { target: `${target.name}@rate` }))!;
      atRate.push({
        target: target.name, rps: round(s.rps, 0), p50Ms: round(s.p50, 3), p90Ms: round(s.p90, 3), p99Ms: round(s.p99, 3), non2xx: s.non2xx + s.errors,
        ...(target.name.startsWith('th-') ? { addedP50Ms: round(s.p50 - bareAtRate.p50, 3), addedP99Ms: round(s.p99 - bareAtRate.p99, 3) } : {}),
      });
    }
    console.log(`\nLatency of one request at a time (${settings.fixedRate} req/s over ${settings.fixedRateConnections} connection, ${settings.fixedRateRounds} × ${settings.sliceSeconds} s per target)\n`);
    console.log(
      table(
        ['target', 'req/s', 'p50 ms', 'p90 ms', 'p99 ms', '+p50 ms', '+p99 ms', 'non-2xx'],
        atRate.map((r) => [
          String(r.target), String(r.rps), fmt(r.p50Ms as number, 2), fmt(r.p90Ms as number, 2), fmt(r.p99Ms as number, 2),
          r.addedP50Ms === undefined ? '' : fmt(r.addedP50Ms as number, 2), r.addedP99Ms === undefined ? '' : fmt(r.addedP99Ms as number, 2), String(r.non2xx),
        ]),
      ),
    );
    results.throughput = { rows, oneAtATime: { rate: settings.fixedRate, connections: settings.fixedRateConnections, rows: atRate }, pairedRatios, rounds: rounds.map((r) => Object.fromEntries(Object.entries(r).map(([k, v]) => [k, round(v, 0)]))), refreshesDuringMeasurement: refreshesDuringThroughput };
  }
  for (const { child: server } of servers) {
    await server.call('stop').catch(() => undefined);
    await server.stop();
  }

  // -------------------------------------------------------------------------
  // 2. Refresh storms
  // -------------------------------------------------------------------------
  if (!skip.has('storm')) {
    results.storm = {};
    const stormStores = redisUp ? (['cookie', 'redis'] as const) : (['cookie'] as const);
    if (!redisUp) loud('refresh storm with the redis store SKIPPED: Redis is not reachable');
    for (let i = 0; i < stormStores.length; i++) {
      (results.storm as Record<string, unknown>)[stormStores[i]!] = await storm(stormStores[i]!, stormStores.length - i);
    }
  }

  // -------------------------------------------------------------------------
  // 3. Production-like (issue 28): realistic cookie, many sessions, 50 connections, a no-work
  //    upstream, nginx and mod_auth_openidc beside, tracing off/on. After the storms, whose
  //    time budget it would otherwise eat. Its own provider and upstreams: bench/production.ts.
  // -------------------------------------------------------------------------
  if (!skip.has('production')) {
    results.production = await productionPhase({
      load, spawn: child, progress, loud, redisUp, redisPrefix, stores, accessTokenTtlSeconds: settings.accessTokenTtlSeconds,
    });
  }

  // -------------------------------------------------------------------------
  // 4. Memory
  // -------------------------------------------------------------------------
  if (!skip.has('memory')) results.memory = await memory(template);

  // -------------------------------------------------------------------------
  // 4. WebSockets
  // -------------------------------------------------------------------------
  if (!skip.has('websocket')) results.websocket = await webSocketFigure(template);
} finally {
  if (redis) {
    const removed = await deleteKeys(redis, redisPrefix).catch(() => -1);
    progress(`deleted ${removed} Redis key(s) under ${redisPrefix}`);
    redis.disconnect();
  }
  await load.call('closeAgents').catch(() => undefined);
  await upstreamChild.call('stop').catch(() => undefined);
  await providerChild.call('stop').catch(() => undefined);
  for (const c of children) await c.stop();
}

// ---------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------

const runtimeSeconds = round((Date.now() - started) / 1000, 1);
const date = new Date();
const report = { date: date.toISOString(), runtimeSeconds, machine: { ...machine, loadAverageAtEnd: loadavg().map((l) => round(l, 2)) }, source, settings, loadGenerator: 'autocannon in a child process (bench/lib/load-child.ts); the production phase: wrk when installed (results.production.loadGenerator)', ...results };
const resultsDir = fileURLToPath(new URL('./results/', import.meta.url));
mkdirSync(resultsDir, { recursive: true });
const file = `${resultsDir}${date.toISOString().replace(/[:.]/g, '-')}.json`;
writeFileSync(file, `${JSON.stringify(report, null, 2)}\n`);
writeFileSync(`${resultsDir}latest.json`, `${JSON.stringify(report, null, 2)}\n`);
if (results.throughput) {
  const rows = (results.throughput as { rows: Array<Record<string, unknown>> }).rows;
  writeFileSync(
    `${resultsDir}latest.md`,
    `${markdownTable(
      ['target', 'req/s', 'p50 ms', 'p99 ms', 'req/s vs bare proxy', 'req/s vs direct', 'added p99 vs bare proxy (ms)', 'proxy CPU per request (µs)'],
      rows.map((r) => [
        String(r.target), String(r.rps), fmt(r.p50Ms as number, 2), fmt(r.p99Ms as number, 2), fmt(r.vsBareProxy as number, 2), fmt(r.vsDirect as number, 2),
        r.addedP99Ms === undefined ? '' : fmt(r.addedP99Ms as number, 2), r.cpuUsPerRequest === undefined ? '' : String(r.cpuUsPerRequest),
      ]),
    )}\n\n${machine.cores} × ${machine.cpuModel}, node ${machine.node}, ${settings.connections} connections, ${settings.rounds} × ${settings.sliceSeconds} s per target, ${report.date}\n`,
  );
}
if (results.production) {
  writeFileSync(`${resultsDir}latest-production.md`, `${productionMarkdown(results.production as Record<string, unknown>)}\n${machine.cores} × ${machine.cpuModel}, node ${machine.node}, ${report.date}\n`);
}
progress(`results written to ${file} and bench/results/latest.json (total ${runtimeSeconds} s)`);

// ---------------------------------------------------------------------------
// Phases
// ---------------------------------------------------------------------------

/**
 * Messages per second over WebSockets, directly to an echo upstream and through
 * token-handler (memory store, one session), alternated round by round: `BENCH_WS_SOCKETS`
 * sockets each sending a 64-byte message and waiting for its echo before the next
 * (ping-pong), so the rate is the round trips both paths sustain and the latency is per message.
 */
async function webSocketFigure(session: SessionRecord | undefined): Promise<Record<string, unknown>> {
  if (!session) throw new Error('no session to take a token from');
  const { WebSocket } = await import('ws');
  const sockets = num('BENCH_WS_SOCKETS', 16);
  const roundsCount = num('BENCH_WS_ROUNDS', 3);
  const wsUpstream = child('./ws-upstream-child.ts');
  const { url: wsUrl } = await wsUpstream.call<{ url: string }>('start');
  const server = child('./th-child.ts');
  const { url, cookie } = await server.call<{ url: string; cookie: string }>('startTokenHandler', {
    provider, upstreamUrl: upstream.url, store: 'memory', redisPrefix, userName: 'bench-ws',
    extra: {
      session: { store: 'memory', secrets: [SECRET], maxWebSockets: 1000 },
      routes: [{ prefix: '/api', upstream: upstream.url }, { prefix: '/live', upstream: wsUrl, websocket: true, websocketPingSeconds: 0 }],
    },
  });
  const bare = child('./th-child.ts');
  const { url: bareUrl } = await bare.call<{ url: string }>('startBareProxy', { upstreamUrl: upstream.url, bearer: session.accessToken, wsUpstreamUrl: wsUrl });
  const targets: Array<{ name: string; url: string; headers: Record<string, string> }> = [
    { name: 'direct', url: `${wsUrl.replace(/^http/, 'ws')}/echo`, headers: { authorization: `Bearer ${session.accessToken}` } },
    { name: 'bare-proxy', url: `${bareUrl.replace(/^http/, 'ws')}/live/echo`, headers: { cookie, origin: PUBLIC_URL } },
    { name: 'token-handler', url: `${url.replace(/^http/, 'ws')}/live/echo`, headers: { cookie, origin: PUBLIC_URL } },
  ];
  const payload = 'x'.repeat(64);
  const slice = async (target: (typeof targets)[number], seconds: number) => {
    const open = await Promise.all(
      Array.from({ length: sockets }, () => new Promise<InstanceType<typeof WebSocket>>((resolve, reject) => {
        const ws = new WebSocket(target.url, undefined, { headers: target.headers });
        ws.once('open', () => resolve(ws));
        ws.on('error', reject);
      })),
    );
    const latencies: number[] = [];
    const deadline = performance.now() + seconds * 1000;
    await Promise.all(
      open.map((ws) => new Promise<void>((resolve) => {
        let sentAt = performance.now();
        ws.on('message', () => {
          const at = performance.now();
          latencies.push(at - sentAt);
          if (at >= deadline) {
            resolve();
            return;
          }
          sentAt = at;
          ws.send(payload);
        });
        ws.send(payload);
      })),
    );
    await Promise.all(open.map((ws) => new Promise((resolve) => {
      ws.once('close', resolve);
      ws.close();
    })));
    return { messages: latencies.length, seconds, latencies };
  };
  progress(`websockets: ${targets.length} targets × ${roundsCount} rounds × ${settings.sliceSeconds} s, ${sockets} sockets ping-pong (+1 s warm-up each)`);
  for (const target of targets) await slice(target, 1);
  const pooled = new Map(targets.map((t) => [t.name, { messages: 0, seconds: 0, latencies: [] as number[] }]));
  for (let r = 0; r < roundsCount; r++) {
    // Rotated every round, so no target always runs right after the same neighbour.
    for (const target of targets.map((_, i) => targets[(i + r) % targets.length]!)) {
      const result = await slice(target, settings.sliceSeconds);
      const total = pooled.get(target.name)!;
      total.messages += result.messages;
      total.seconds += result.seconds;
      for (const ms of result.latencies) total.latencies.push(ms);
    }
  }
  for (const proxy of [server, bare]) {
    await proxy.call('stop').catch(() => undefined);
    await proxy.stop();
  }
  await wsUpstream.call('stop').catch(() => undefined);
  await wsUpstream.stop();
  const rows = targets.map((t) => {
    const total = pooled.get(t.name)!;
    const sorted = [...total.latencies].sort((a, b) => a - b);
    return { target: t.name, messagesPerSecond: round(total.messages / total.seconds, 0), p50Ms: round(percentile(sorted, 0.5), 3), p99Ms: round(percentile(sorted, 0.99), 3) };
  });
  const [direct, bareRow, th] = rows as [(typeof rows)[number], (typeof rows)[number], (typeof rows)[number]];
  const figure = {
    sockets, rounds: roundsCount, messageBytes: payload.length, rows,
    ratio: round(th.messagesPerSecond / direct.messagesPerSecond, 3),
    ratioVsBareProxy: round(th.messagesPerSecond / bareRow.messagesPerSecond, 3),
    addedP50Ms: round(th.p50Ms - direct.p50Ms, 3), addedP99Ms: round(th.p99Ms - direct.p99Ms, 3),
    addedP50MsVsBareProxy: round(th.p50Ms - bareRow.p50Ms, 3),
  };
  console.log(`\nWebSockets (${sockets} sockets, ping-pong of ${payload.length}-byte messages, ${roundsCount} × ${settings.sliceSeconds} s per target)\n`);
  console.log(table(['target', 'messages/s', 'p50 ms', 'p99 ms'], rows.map((r) => [r.target, String(r.messagesPerSecond), fmt(r.p50Ms, 3), fmt(r.p99Ms, 3)])));
  console.log(`token-handler: ${fmt(figure.ratio, 3)} of the direct message rate (${fmt(figure.ratioVsBareProxy, 3)} of the bare proxy's); added per message vs direct p50 ${fmt(figure.addedP50Ms, 3)} ms, p99 ${fmt(figure.addedP99Ms, 3)} ms (vs the bare proxy p50 ${fmt(figure.addedP50MsVsBareProxy, 3)} ms)`);
  return figure;
}

interface BurstResult {
  statuses: Record<string, number>;
  latencies: number[];
  totalMs: number;
  errors: string[];
  perRequest: number[];
  failureSamples: Record<string, string>;
}

/** Seconds this storm may take: its share of what is left of the budget. */
function stormShareSeconds(stormsLeft: number): number {
  const reserveAfterStorms = skip.has('memory') ? 5 : 20;
  const left = settings.budgetSeconds - (Date.now() - started) / 1000 - reserveAfterStorms;
  return Math.max(20, left / stormsLeft);
}

async function storm(store: 'cookie' | 'redis', stormsLeft: number): Promise<Record<string, unknown>> {
  const stormEnd = Date.now() + stormShareSeconds(stormsLeft) * 1000;
  let offsetMs = 0;
  const now = () => Date.now() + offsetMs;
  const prefix = `${redisPrefix}storm:`;
  const log = new DevNullLog();
  const local = await startTokenHandler({ provider, upstreamUrl: upstream.url, store, redisPrefix: prefix, now, manyLogins: true, log });
  /** What token-handler logged (all replicas, besides the per-request line) since the last call: why requests failed. */
  const warnings = async (): Promise<Record<string, number>> => {
    const merged = new Map(log.warnings);
    log.forget();
    for (const [msg, count] of Object.entries((await replica?.call<Record<string, number>>('warnings', { forget: true })) ?? {})) merged.set(msg, (merged.get(msg) ?? 0) + count);
    return Object.fromEntries([...merged.entries()].sort((a, b) => b[1] - a[1]).slice(0, 8));
  };
  // redis: a second replica in a process of its own sharing Redis; requests alternate between them.
  const replica = store === 'redis' ? spawnChild('./th-child.ts') : undefined;
  const instances: Array<{ url: string }> = [local];
  /** Moves token-handler's clock (every replica's) forward; Redis, seals and the provider keep real time. */
  const advanceClock = async (seconds: number) => {
    offsetMs += seconds * 1000;
    await replica?.call('setClockOffset', { ms: offsetMs });
  };
  try {
    if (replica) {
      const { url } = await replica.call<{ url: string }>('startTokenHandler', {
        provider, upstreamUrl: upstream.url, store, redisPrefix: prefix, login: false, injectClock: true,
      });
      instances.push({ url });
    }
    const replicas = instances.length;
    const target = (i: number) => instances[i % replicas]!.url;

    // --- one session, N parallel requests ---
    const single = await login(local.app, `storm-${store}-single`);
    // Its access token is now past its expiry as token-handler sees it.
    await advanceClock(settings.accessTokenTtlSeconds + 1);
    const n = settings.stormRequests;
    await load.call('prewarm', { origins: Object.fromEntries(instances.map((inst) => [inst.url, Math.ceil(n / replicas)])), path: '/healthz' });
    const before = await providerChild.call<TokenStats>('tokenStats');
    const burst = await load.call<BurstResult>('burst', {
      requests: Array.from({ length: n }, (_, i) => ({ url: `${target(i)}${API_PATH}`, headers: browserHeaders(single) })),
    });
    const after = await providerChild.call<TokenStats>('tokenStats');
    const calls = diffStats(before, after);
    // A browser still holding the old cookie afterwards: served from the remembered result, no new refresh.
    const late = await load.call<BurstResult>('burst', { requests: [0, 1].map((i) => ({ url: `${target(i)}${API_PATH}`, headers: browserHeaders(single) })) });
    const afterLate = await providerChild.call<TokenStats>('tokenStats');
    const lateCalls = diffStats(after, afterLate);
    const failures = n - (burst.statuses['200'] ?? 0);
    const singleResult = {
      requests: n,
      replicas,
      tokenEndpointRefreshCalls: calls.refreshOk + calls.refreshFailed,
      refreshFailures: calls.refreshFailed,
      failures,
      statuses: burst.statuses,
      failureSamples: burst.failureSamples,
      p50Ms: round(percentile(burst.latencies, 0.5), 2),
      p99Ms: round(percentile(burst.latencies, 0.99), 2),
      maxMs: round(Math.max(...burst.latencies), 2),
      totalMs: round(burst.totalMs, 1),
      oldCookieAfterwards: { statuses: late.statuses, extraRefreshCalls: lateCalls.refreshOk + lateCalls.refreshFailed },
    };
    const verdict = singleResult.tokenEndpointRefreshCalls === 1 && failures === 0 ? 'OK' : 'FAILED';
    progress(
      `storm/${store}: ${n} parallel requests of one expired session${replicas > 1 ? ` alternating over ${replicas} replicas (2 processes)` : ''}: ` +
        `${singleResult.tokenEndpointRefreshCalls} refresh call(s), ${failures} failure(s), p50 ${fmt(singleResult.p50Ms)} ms, p99 ${fmt(singleResult.p99Ms)} ms, all done in ${fmt(singleResult.totalMs, 0)} ms — ${verdict}`,
    );
    if (verdict !== 'OK') loud(`storm/${store}: expected exactly 1 refresh call and 0 failures; statuses ${JSON.stringify(burst.statuses)}; e.g. ${JSON.stringify(burst.failureSamples)} ${burst.errors.slice(0, 3).join('; ')}`);

    // --- as many sessions as fit (up to the setting), then all of them expiring together ---
    // Cost estimate of the bursts per session, from the storm just measured (each request unsealed a
    // cookie and re-sealed one, as in the many-session storm): 2.5 requests plus the check afterwards, with slack.
    const secondsPerRequest = burst.totalMs / 1000 / n;
    const burstSecondsFor = (sessions: number) => sessions * 3.5 * secondsPerRequest * 1.25 + 5;
    progress(`storm/${store}: logging in up to ${settings.stormSessions} sessions (${settings.loginConcurrency} at a time, through inject) within this storm's share of the ${settings.budgetSeconds} s budget`);
    const loginStarted = Date.now();
    const many = await loginMany(local.app, settings.stormSessions, {
      concurrency: settings.loginConcurrency,
      userPrefix: `storm-${store}-`,
      keepGoing: (done) => done < 100 || (stormEnd - Date.now()) / 1000 > burstSecondsFor(done + settings.loginConcurrency),
      onProgress: (done) => progress(`storm/${store}: ${done} logins`),
    });
    const sessionCount = many.length;
    const loginSeconds = (Date.now() - loginStarted) / 1000;
    progress(`storm/${store}: ${sessionCount} logins in ${loginSeconds.toFixed(1)} s (${(sessionCount / loginSeconds).toFixed(0)}/s)`);
    if (sessionCount < settings.stormSessions) {
      loud(`storm/${store}: only ${sessionCount} of ${settings.stormSessions} sessions fit in the ${settings.budgetSeconds} s budget on this machine now (logins at ${(sessionCount / loginSeconds).toFixed(0)}/s): the many-session storm uses ${sessionCount}`);
    }
    // Every one of them is now past its access token's expiry.
    await advanceClock(settings.accessTokenTtlSeconds + 1);

    // --- many sessions expiring together ---
    const requests: Array<{ url: string; headers: Record<string, string> }> = [];
    many.forEach((cookie, s) => {
      const k = 2 + (s % 2);
      for (let r = 0; r < k; r++) requests.push({ url: `${target(s + r)}${API_PATH}`, headers: browserHeaders(cookie) });
    });
    await load.call('prewarm', { origins: Object.fromEntries(instances.map((inst) => [inst.url, Math.ceil(requests.length / replicas)])), path: '/healthz' });
    await warnings(); // start counting afresh
    const beforeMany = await providerChild.call<TokenStats>('tokenStats');
    const lag = monitorEventLoopDelay({ resolution: 10 });
    lag.enable();
    await replica?.call('lagStart');
    const burstMany = await load.call<BurstResult>('burst', { requests });
    const eventLoopDelay = { [`replica 1 (this process)`]: lagSummary(lag), ...(replica ? { 'replica 2 (child process)': await replica.call<ReturnType<typeof lagSummary>>('lagStop') } : {}) };
    const loggedDuringStorm = await warnings();
    const afterMany = await providerChild.call<TokenStats>('tokenStats');
    const callsMany = diffStats(beforeMany, afterMany);
    const failuresMany = requests.length - (burstMany.statuses['200'] ?? 0);
    // Afterwards, every browser once more with the cookie it had before the storm: a session whose
    // refresh succeeded is served (from the remembered result); one whose refresh was lost is not.
    const afterCheck = await providerChild.call<TokenStats>('tokenStats');
    const recovery = await load.call<BurstResult>('burst', { requests: many.map((cookie, s) => ({ url: `${target(s)}${API_PATH}`, headers: browserHeaders(cookie) })) });
    const afterRecovery = await providerChild.call<TokenStats>('tokenStats');
    const recoveryCalls = diffStats(afterCheck, afterRecovery);
    const manyResult = {
      sessions: sessionCount,
      requests: requests.length,
      replicas,
      loginSeconds: round(loginSeconds, 1),
      tokenEndpointRefreshCalls: callsMany.refreshOk + callsMany.refreshFailed,
      refreshFailures: callsMany.refreshFailed,
      refreshesPerSession: round((callsMany.refreshOk + callsMany.refreshFailed) / sessionCount, 3),
      failures: failuresMany,
      statuses: burstMany.statuses,
      failureSamples: burstMany.failureSamples,
      p50Ms: round(percentile(burstMany.latencies, 0.5), 1),
      p99Ms: round(percentile(burstMany.latencies, 0.99), 1),
      totalMs: round(burstMany.totalMs, 0),
      loggedDuringStorm,
      eventLoopDelayDuringStorm: Object.fromEntries(Object.entries(eventLoopDelay).map(([k, v]) => [k, { p50Ms: round(v.p50Ms, 1), p99Ms: round(v.p99Ms, 0), maxMs: round(v.maxMs, 0) }])),
      afterwards: {
        sessionsServed: recovery.statuses['200'] ?? 0,
        statuses: recovery.statuses,
        failureSamples: recovery.failureSamples,
        extraRefreshCalls: recoveryCalls.refreshOk + recoveryCalls.refreshFailed,
        refreshRejected: recoveryCalls.refreshFailed,
      },
    };
    // A 503 here is idp_unavailable: the request waited oidc.timeoutMs for a refresh the provider had
    // not answered yet (the refresh goes on and its result is used, so the session is kept). That is
    // the provider's throughput, by design; token-handler fails this storm only by refreshing a
    // session more than once, by any other failure, or by losing a session (the check afterwards).
    const waitedForProvider = burstMany.statuses['503'] ?? 0;
    const verdictMany =
      manyResult.refreshesPerSession === 1 && failuresMany === waitedForProvider && manyResult.afterwards.sessionsServed === sessionCount ? 'OK' : 'FAILED';
    const grantsPerSecond = manyResult.tokenEndpointRefreshCalls / (manyResult.totalMs / 1000);
    progress(
      `storm/${store}: ${sessionCount} sessions × 2–3 parallel requests (${requests.length}): ${manyResult.tokenEndpointRefreshCalls} refresh calls ` +
        `(${manyResult.refreshesPerSession} per session), ${failuresMany} failure(s)` +
        (waitedForProvider > 0 ? ` (${waitedForProvider} answered 503 idp_unavailable after oidc.timeoutMs: the provider worked through the refreshes at ${grantsPerSecond.toFixed(0)}/s)` : '') +
        `, p99 ${fmt(manyResult.p99Ms, 0)} ms, total ${manyResult.totalMs} ms — ${verdictMany}`,
    );
    if (verdictMany !== 'OK' || failuresMany > 0) {
      loud(`storm/${store} (many sessions): statuses ${JSON.stringify(burstMany.statuses)}; e.g. ${JSON.stringify(burstMany.failureSamples)} ${burstMany.errors.slice(0, 3).join('; ')}`);
    }
    console.log(`    token-handler logged during it (all replicas): ${JSON.stringify(loggedDuringStorm)}`);
    console.log(`    event-loop delay during it: ${Object.entries(manyResult.eventLoopDelayDuringStorm).map(([k, v]) => `${k} p99 ${v.p99Ms} ms, max ${v.maxMs} ms`).join('; ')}`);
    progress(
      `storm/${store}: afterwards ${manyResult.afterwards.sessionsServed}/${sessionCount} sessions still served with their old cookie ` +
        `(${manyResult.afterwards.extraRefreshCalls} further refresh call(s), ${manyResult.afterwards.refreshRejected} rejected by the provider)`,
    );
    await load.call('closeAgents');

    let redisKeys: Record<string, unknown> | undefined;
    if (store === 'redis' && redis) redisKeys = await keyUsage(redis, prefix);
    return { single: singleResult, many: manyResult, ...(redisKeys ? { redisKeysAfterStorm: redisKeys } : {}) };
  } finally {
    await local.close();
    if (replica) {
      await replica.call('stop').catch(() => undefined);
      await replica.stop();
    }
  }
}

async function memory(base: SessionRecord | undefined): Promise<Record<string, unknown>> {
  if (!base) throw new Error('memory: no template record');
  const out: Record<string, unknown> = {};
  const profiles: TokenProfile[] = ['opaque', 'jwt'];

  // Sealed cookie sizes.
  const now = Date.now();
  const cookieSizes: Record<string, unknown> = {};
  for (const profile of profiles) {
    const record = profile === 'opaque' ? base : syntheticRecord(base, 0, 'jwt', now);
    const sealed = await sealer.seal(record, 28_800);
    cookieSizes[profile] = {
      accessTokenChars: record.accessToken.length,
      refreshTokenChars: record.refreshToken?.length ?? 0,
      idTokenChars: record.idToken?.length ?? 0,
      recordJsonBytes: Buffer.byteLength(JSON.stringify(record)),
      sealedCookieBytes: sealed.length,
      chunks: Math.ceil(sealed.length / 3800),
    };
  }
  const pointer = await sealer.seal({ sid: base.id }, 28_800);
  cookieSizes.serverSidePointer = { sealedCookieBytes: pointer.length };
  out.cookieSizes = cookieSizes;
  progress(
    `cookie sizes: cookie store ${(cookieSizes.opaque as { sealedCookieBytes: number }).sealedCookieBytes} B (opaque tokens), ` +
      `${(cookieSizes.jwt as { sealedCookieBytes: number }).sealedCookieBytes} B (~800-byte JWT access token); memory/redis store pointer ${pointer.length} B`,
  );

  // Memory store: a fresh --expose-gc process per token profile.
  const memoryStore: Record<string, unknown> = {};
  for (const profile of profiles) {
    progress(`memory store (${profile} tokens): inserting ${settings.memorySessions.join(' then ')} sessions in a fresh --expose-gc process`);
    const probe = spawnChild('./memory-child.ts', { nodeFlags: ['--expose-gc'] });
    try {
      const measured = await probe.call<{ steps: Array<Record<string, number>>; jsonBytesPerRecord: number; before: Record<string, number> }>('measure', {
        template: base, profile, counts: settings.memorySessions, ttlSeconds: 1800,
      });
      memoryStore[profile] = measured;
      for (const step of measured.steps) {
        progress(
          `  ${step.sessions} sessions: RSS ${bytes(step.rss!)} (+${bytes(step.rssDelta!)}, ${bytes(step.rssPerSession!)}/session), ` +
            `heap ${bytes(step.heapUsed!)} (+${bytes(step.heapDelta!)}, ${bytes(step.heapPerSession!)}/session); record JSON ${Math.round(measured.jsonBytesPerRecord)} B`,
        );
      }
    } finally {
      await probe.stop();
    }
  }
  out.memoryStore = memoryStore;

  // Redis: bytes per session through RedisSessionStore.
  if (!redis) {
    loud('bytes per session in Redis SKIPPED: Redis is not reachable');
  } else {
    const redisBytes: Record<string, unknown> = {};
    for (const profile of profiles) {
      const prefix = `${redisPrefix}mem-${profile}:`;
      const store = new RedisSessionStore({ redis, keys: new KeyLayout(prefix, false), sealer, absoluteTimeoutSeconds: 28_800 });
      const usedBefore = await usedMemory(redis);
      const writes: Promise<void>[] = [];
      for (let i = 0; i < settings.redisSessions; i++) writes.push(store.create(syntheticRecord(base, i, profile, now), 1800));
      await Promise.all(writes);
      const usedAfter = await usedMemory(redis);
      const usage = await keyUsage(redis, prefix);
      const perSession = (usage.totalBytes as number) / settings.redisSessions;
      redisBytes[profile] = { sessions: settings.redisSessions, ...usage, memoryUsagePerSession: round(perSession, 0), usedMemoryDeltaPerSession: round((usedAfter - usedBefore) / settings.redisSessions, 0) };
      progress(
        `redis (${profile} tokens): ${settings.redisSessions} sessions → MEMORY USAGE ${Math.round(perSession)} B/session (session hash + sid and sub index sets), ` +
          `used_memory +${Math.round((usedAfter - usedBefore) / settings.redisSessions)} B/session`,
      );
      await deleteKeys(redis, prefix);
    }
    out.redis = redisBytes;
  }
  return out;
}

async function usedMemory(client: Redis): Promise<number> {
  const info = await client.info('memory');
  return Number(/used_memory:(\d+)/.exec(info)?.[1] ?? NaN);
}

async function scanKeys(client: Redis, prefix: string): Promise<string[]> {
  const keys: string[] = [];
  let cursor = '0';
  do {
    const [next, batch] = await client.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
    cursor = next;
    keys.push(...batch);
  } while (cursor !== '0');
  return keys;
}

/** MEMORY USAGE of every key under `prefix`, grouped by kind (session, sid, sub, refresh:result, …). */
async function keyUsage(client: Redis, prefix: string): Promise<Record<string, unknown>> {
  const keys = await scanKeys(client, prefix);
  const kinds: Record<string, { keys: number; bytes: number; avgBytes?: number }> = {};
  const pipeline = client.pipeline();
  for (const key of keys) pipeline.call('MEMORY', 'USAGE', key, 'SAMPLES', '0');
  const answers = (await pipeline.exec()) ?? [];
  let totalBytes = 0;
  keys.forEach((key, i) => {
    const rest = key.slice(prefix.length);
    const kind = rest.startsWith('refresh:') ? rest.split(':').slice(0, 2).join(':') : (rest.split(':')[0] ?? rest);
    const size = Number(answers[i]?.[1] ?? 0);
    const entry = (kinds[kind] ??= { keys: 0, bytes: 0 });
    entry.keys++;
    entry.bytes += size;
    totalBytes += size;
  });
  for (const entry of Object.values(kinds)) entry.avgBytes = Math.round(entry.bytes / entry.keys);
  return { keys: keys.length, totalBytes, byKind: kinds };
}

async function deleteKeys(client: Redis, prefix: string): Promise<number> {
  const keys = await scanKeys(client, prefix);
  for (let i = 0; i < keys.length; i += 500) await client.unlink(...keys.slice(i, i + 500));
  return keys.length;
}
