/**
 * `npm run soak` (issue 9): a bounded soak of token-handler with a provider outage.
 *
 *  - Its own redis-server (test/support/redis.ts) on a free port of 127.0.0.1; without the
 *    binary, 127.0.0.1:6379 (or SOAK_REDIS_URL, loopback only) under a unique key prefix if it
 *    answers PING (the prefix's keys are deleted afterwards), else a loud message and exit 1.
 *  - A child process with the real oidc-provider of the test harness (5-second access
 *    tokens, rotating refresh tokens with reuse detection) and the real upstream API that
 *    checks every token by introspection at that provider (soak/lib/idp-child.ts).
 *  - TWO token-handler instances in this process (store: redis, same Redis, same key
 *    prefix, same secrets), each listening on its own port of 127.0.0.1.
 *  - 50 sessions (each its own account, logged in through instance A), 4 "tabs" per
 *    session calling GET /api/... over real HTTP for the whole run, each tab alternating
 *    between the instances, all tabs of a session sharing one cookie jar (Set-Cookie
 *    applied like a browser), 500–900 ms think time; a 503 means "retry later" (0.5–1 s).
 *    Why not 20–50 ms: two token-handler instances with store: redis serve ~400 req/s
 *    together on this 2-core class of machine (bench: one instance ~411 req/s with its load
 *    generator elsewhere), while 200 tabs at 20–50 ms ask for ~5,000 req/s: everything
 *    saturates (ELU ~0.96, p50 ~200 ms, multi-second stalls). 500–900 ms asks for ~250 req/s.
 *    SOAK_THINK_MS=20-50 runs the saturated variant (see soak/README.md for what it finds).
 *  - At 1/3 of the run the provider is stopped for 10 s, then started again on the same
 *    port with the same state (grants kept): an outage, not a mass revocation. By default the
 *    stop is a clean shutdown (the token endpoint is drained first: new token requests get
 *    their connection closed unanswered, those already inside the provider are answered);
 *    SOAK_OUTAGE_MODE=abrupt cuts every connection at once, like a crash.
 *  - Then every session is verified with one call to each instance, after the provider is
 *    back and the session's tokens have been refreshed at least once since.
 *
 * Prints a summary and writes soak/results/latest.json. Exit code 0 only when no session was
 * lost, no request failed unexpectedly (anything but 503 idp_unavailable / the upstream's 503
 * introspection_failed while the provider is down), the provider answered no invalid_grant and
 * revoked no grant, and every session answered 200 on both instances at the end.
 * The whole run stops by itself: a watchdog ends it at SOAK_HARD_LIMIT_SECONDS (default and
 * maximum 110) plus at most 8 s of cleanup, i.e. always within 2 minutes.
 *
 * Knobs (environment): SOAK_SESSIONS (50), SOAK_TABS (4), SOAK_SECONDS (70, load phase),
 * SOAK_OUTAGE_AT (SOAK_SECONDS/3), SOAK_OUTAGE_SECONDS (10), SOAK_THINK_MS ("500-900"),
 * SOAK_OUTAGE_MODE (graceful | abrupt), SOAK_ACCESS_TOKEN_SECONDS (5),
 * SOAK_REFRESH_SKEW_SECONDS (2), SOAK_LOG_LEVEL (info), SOAK_HARD_LIMIT_SECONDS (110).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { cpus, loadavg } from 'node:os';
import { performance } from 'node:perf_hooks';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import { Redis } from 'ioredis';
import { buildApp } from '../src/app.js';
import { configEnvNames, parseConfig } from '../src/config/load.js';
import type { Config } from '../src/config/types.js';
import { TestBrowser } from '../test/support/bff.js';
import { redisServerInstalled, startRedisServer, uniquePrefix, type RedisServer } from '../test/support/redis.js';
import type { GrantEvent, IdpInfo, IdpReport } from './lib/idp-child.js';
import { spawnChild, type Child } from '../bench/lib/rpc.js';
import { logoutDuringRefresh } from './lib/logout-phase.js';

// ---------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------

const env = process.env;
const num = (name: string, fallback: number, min: number, max: number): number => {
  const value = env[name] === undefined || env[name] === '' ? fallback : Number(env[name]);
  if (!Number.isFinite(value) || value < min || value > max) {
    console.error(`soak: ${name}=${env[name]} is out of range; expected ${min}..${max}`);
    process.exit(2);
  }
  return value;
};
const loadSeconds = num('SOAK_SECONDS', 70, 10, 90);
const thinkRange = (env.SOAK_THINK_MS ?? '500-900').split('-').map(Number);
if (thinkRange.some((n) => !Number.isFinite(n) || n < 0 || n > 10_000)) {
  console.error(`soak: SOAK_THINK_MS=${env.SOAK_THINK_MS}: expected "MIN-MAX" in milliseconds, e.g. 500-900`);
  process.exit(2);
}
const settings = {
  sessions: num('SOAK_SESSIONS', 50, 1, 500),
  tabsPerSession: num('SOAK_TABS', 4, 1, 16),
  loadSeconds,
  outageAtSeconds: num('SOAK_OUTAGE_AT', Math.round(loadSeconds / 3), 1, loadSeconds - 1),
  outageSeconds: num('SOAK_OUTAGE_SECONDS', 10, 1, 60),
  /** graceful: the provider drains its token endpoint before it stops (a clean shutdown); abrupt: a crash. */
  outageMode: (env.SOAK_OUTAGE_MODE ?? 'graceful') as 'graceful' | 'abrupt',
  thinkMs: { min: thinkRange[0] ?? 20, max: thinkRange[1] ?? thinkRange[0] ?? 50 },
  retryAfter503Ms: { min: 500, max: 1000 },
  retryAfterOtherFailureMs: 250,
  requestTimeoutMs: 10_000,
  accessTokenTtlSeconds: num('SOAK_ACCESS_TOKEN_SECONDS', 5, 1, 3600),
  refreshSkewSeconds: num('SOAK_REFRESH_SKEW_SECONDS', 2, 0, 3600),
  /** A request overlapping [outage start, provider back + this] may see the outage. */
  outageGraceMs: 1000,
  loginConcurrency: 10,
  logLevel: env.SOAK_LOG_LEVEL ?? 'info',
  hardLimitSeconds: num('SOAK_HARD_LIMIT_SECONDS', 110, 20, 110),
};
if (settings.outageMode !== 'graceful' && settings.outageMode !== 'abrupt') {
  console.error(`soak: SOAK_OUTAGE_MODE=${settings.outageMode}: expected graceful or abrupt`);
  process.exit(2);
}
if (settings.outageAtSeconds + settings.outageSeconds + 5 > settings.loadSeconds) {
  console.error('soak: the provider must be back at least 5 s before the load phase ends (SOAK_OUTAGE_AT + SOAK_OUTAGE_SECONDS + 5 <= SOAK_SECONDS)');
  process.exit(2);
}

const PUBLIC_URL = 'https://app.example.test';
const REDIRECT_URI = `${PUBLIC_URL}/auth/callback`;
const SESSION_COOKIE = '__Host-th_session';
const SECRETS = ['soak-secret-soak-secret-soak-secret-0001'];
const resultsDir = fileURLToPath(new URL('./results/', import.meta.url));

const t0 = Date.now();
const rel = (at: number) => Math.round(at - t0) / 1000;
const elapsed = () => `${rel(Date.now()).toFixed(1).padStart(6)}s`;
const progress = (message: string) => console.log(`[${elapsed()}] ${message}`);
const loud = (message: string) => console.log(`\n[${elapsed()}] !!!!!!!! ${message} !!!!!!!!\n`);
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const between = (min: number, max: number) => min + Math.random() * (max - min);

// ---------------------------------------------------------------------------
// Resources and cleanup (everything started here is stopped here, by handle)
// ---------------------------------------------------------------------------

let redisServer: RedisServer | undefined;
let sharedRedis: { url: string; prefix: string } | undefined;
let idp: Child | undefined;
const apps: FastifyInstance[] = [];
let cleaning: Promise<void> | undefined;

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T | undefined> {
  return Promise.race([
    promise,
    sleep(ms).then(() => {
      console.error(`soak: ${what} did not finish within ${ms} ms; going on`);
      return undefined;
    }),
  ]);
}

/**
 * Stops everything this run started. Every step is bounded and the steps run side by side, so
 * the redis-server child (the one thing that would outlive this process) is always stopped; the
 * provider child exits by itself when this process goes away (IPC disconnect).
 */
function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    const closeApps = (async () => {
      for (const app of apps) {
        // The load is over: drop the tabs' keep-alive connections rather than wait for them.
        app.server.closeAllConnections();
        await withTimeout(app.close(), 3000, 'closing a token-handler instance').catch(() => undefined);
      }
    })();
    const stopIdp = (async () => {
      if (!idp) return;
      await withTimeout(idp.call('shutdown', undefined, 2000), 2500, 'stopping provider and upstream').catch(() => undefined);
      await idp.stop(1500);
    })();
    const stopRedis = (async () => {
      if (redisServer) await withTimeout(redisServer.stop(), 4000, 'stopping redis-server');
      if (sharedRedis) {
        // Fallback on a shared Redis: remove what this run wrote under its own prefix.
        const redis = new Redis(sharedRedis.url, { maxRetriesPerRequest: 1, connectTimeout: 1000, commandTimeout: 2000 });
        redis.on('error', () => undefined);
        try {
          let cursor = '0';
          do {
            const [next, keys] = await redis.scan(cursor, 'MATCH', `${sharedRedis.prefix}*`, 'COUNT', 1000);
            if (keys.length) await redis.del(...keys);
            cursor = next;
          } while (cursor !== '0');
        } catch {
          console.error(`soak: could not remove the keys under ${sharedRedis.prefix} from ${sharedRedis.url}`);
        } finally {
          redis.disconnect();
        }
      }
    })();
    await Promise.all([closeApps, stopIdp, stopRedis]);
  })();
  return cleaning;
}

const watchdog = setTimeout(() => {
  loud(`HARD LIMIT of ${settings.hardLimitSeconds} s reached: stopping everything; the soak FAILED`);
  try {
    writeResults({ aborted: `hard limit of ${settings.hardLimitSeconds} s reached`, partial: partialState() });
  } catch {
    // nothing more to save
  }
  void withTimeout(cleanup(), 8000, 'cleanup').finally(() => process.exit(1));
}, settings.hardLimitSeconds * 1000);

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    loud(`${signal}: stopping`);
    clearTimeout(watchdog);
    void withTimeout(cleanup(), 8000, 'cleanup').finally(() => process.exit(130));
  });
}

// ---------------------------------------------------------------------------
// token-handler logs: counted, warnings and errors kept, request lines kept when not 200
// ---------------------------------------------------------------------------

interface LogLine {
  level?: number;
  time?: number;
  msg?: string;
  reqId?: string;
  [key: string]: unknown;
}

class LogSink extends Writable {
  readonly byLevel: Record<string, number> = {};
  readonly kept: LogLine[] = [];
  private readonly cap = 20_000;
  private pending = '';

  override _write(chunk: Buffer, _encoding: BufferEncoding, done: (error?: Error | null) => void): void {
    const text = this.pending + chunk.toString();
    const lines = text.split('\n');
    this.pending = lines.pop() ?? '';
    for (const line of lines) this.take(line);
    done();
  }

  private take(line: string): void {
    if (!line) return;
    const levelMatch = /"level":(\d+)/.exec(line);
    const level = levelMatch ? Number(levelMatch[1]) : 0;
    this.byLevel[level] = (this.byLevel[level] ?? 0) + 1;
    // The one-line-per-request log of a 200 is the bulk: counted only.
    if (level <= 30 && line.includes('"msg":"request"') && line.includes('"status":200,')) return;
    if (this.kept.length >= this.cap) return;
    try {
      this.kept.push(JSON.parse(line) as LogLine);
    } catch {
      this.kept.push({ msg: line });
    }
  }
}

// ---------------------------------------------------------------------------
// The stack
// ---------------------------------------------------------------------------

interface Instance {
  name: 'A' | 'B';
  app: FastifyInstance;
  base: string;
  logs: LogSink;
}

async function startRedis(): Promise<{ url: string; keyPrefix: string; own: boolean }> {
  const keyPrefix = `soak:${uniquePrefix()}`;
  if (redisServerInstalled()) {
    redisServer = await startRedisServer();
    return { url: redisServer.url, keyPrefix, own: true };
  }
  const url = env.SOAK_REDIS_URL ?? 'redis://127.0.0.1:6379';
  if (!/^redis:\/\/(127\.0\.0\.1|localhost)(:\d+)?\/?$/.test(url)) {
    console.error(`soak: SOAK_REDIS_URL=${url}: only a Redis on 127.0.0.1 is allowed`);
    process.exit(2);
  }
  const probe = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, connectTimeout: 1000 });
  probe.on('error', () => undefined);
  let pong = false;
  try {
    await probe.connect();
    pong = (await probe.ping()) === 'PONG';
  } catch {
    pong = false;
  } finally {
    probe.disconnect();
  }
  if (!pong) {
    const line = '!'.repeat(78);
    console.error(
      `\n${line}\n!! SOAK NOT RUN: no redis-server binary on this machine, and nothing answers PING\n!! at ${url}. Install it (apt-get install redis-server) and run npm run soak again.\n${line}\n`,
    );
    process.exit(1);
  }
  loud(`no redis-server binary: using the Redis at ${url} under the key prefix ${keyPrefix} (removed afterwards)`);
  sharedRedis = { url, prefix: keyPrefix };
  return { url, keyPrefix, own: false };
}

function tokenHandlerConfig(info: IdpInfo, redis: { url: string; keyPrefix: string }): Config {
  const raw: Record<string, unknown> = {
    publicUrl: PUBLIC_URL,
    listen: { host: '127.0.0.1', port: 0 },
    oidc: {
      issuer: info.issuer,
      clientId: info.clientId,
      clientSecret: info.clientSecret,
      refreshSkewSeconds: settings.refreshSkewSeconds,
    },
    session: { store: 'redis', secrets: SECRETS, redis: { url: redis.url, keyPrefix: redis.keyPrefix } },
    routes: [{ prefix: '/api', upstream: info.upstreamUrl }],
    logging: { level: settings.logLevel, includeSubject: true },
    // Read through inject at the end of the run.
    metrics: { onMainListener: true },
  };
  // 50 logins from one address in a few seconds: the login rate limit (where this version has one) is not under test here.
  if (configEnvNames().includes('TH_RATE_LIMIT_ENABLED')) raw.rateLimit = { enabled: false };
  return parseConfig(raw);
}

async function startInstance(name: 'A' | 'B', config: Config): Promise<Instance> {
  const logs = new LogSink();
  const app = await buildApp(config, { logStream: logs, waitForProvider: true });
  apps.push(app);
  await app.listen({ port: 0, host: '127.0.0.1' });
  const { port } = app.server.address() as AddressInfo;
  return { name, app, base: `http://127.0.0.1:${port}`, logs };
}

// ---------------------------------------------------------------------------
// Sessions, tabs and what they saw
// ---------------------------------------------------------------------------

interface Session {
  index: number;
  login: string;
  /** Shared by the session's tabs, like a browser's cookie jar for one origin. */
  jar: Map<string, string>;
  cookieChanges: number;
  requests: number;
  ok: number;
  lostAt?: number;
  lostBy?: string;
  /** The first failures of this session (any kind), for the evidence of a lost session. */
  failures: FailureSample[];
  final?: Array<{ instance: string; status: number; error?: string; sub?: string }>;
}

type Outcome = { ok: true } | { ok: false; kind: string; status: number; error?: string };

interface FailureSample {
  kind: string;
  session: string;
  instance: string;
  requestId: string;
  startedAt: number;
  endedAt: number;
  status: number;
  error?: string;
  description?: string;
  retryAfter?: string | null;
}

const stats = {
  requests: 0,
  ok: 0,
  byInstance: { A: { requests: 0, ok: 0 }, B: { requests: 0, ok: 0 } } as Record<string, { requests: number; ok: number }>,
  expected: new Map<string, number>(),
  unexpected: new Map<string, number>(),
  samples: [] as FailureSample[],
  samplesPerKind: new Map<string, number>(),
  latencies: [] as number[],
  outageLatencies: [] as number[],
  /** Per 5 s of the load phase. */
  timeline: new Map<number, { requests: number; ok: number; expected: number; unexpected: number }>(),
};

const outage: { stopRequestedAt: number; stoppedAt: number; restartRequestedAt: number; backAt: number; drained?: { ms: number; completedWhileDraining: number } | undefined } = {
  stopRequestedAt: Infinity,
  stoppedAt: Infinity,
  restartRequestedAt: Infinity,
  backAt: Infinity,
};
let loadStartedAt = 0;
let loadEndsAt = 0;

function overlapsOutage(startedAt: number, endedAt: number): boolean {
  return endedAt >= outage.stopRequestedAt && startedAt <= outage.backAt + settings.outageGraceMs;
}

function count(map: Map<string, number>, key: string): void {
  map.set(key, (map.get(key) ?? 0) + 1);
}

/** Applies Set-Cookie headers like a browser: Max-Age<=0, a past Expires or an empty value deletes. */
function applySetCookies(session: Session, setCookies: string[]): void {
  for (const header of setCookies) {
    const [pair = '', ...attributes] = header.split(';');
    const eq = pair.indexOf('=');
    if (eq <= 0) continue;
    const name = pair.slice(0, eq).trim();
    const value = pair.slice(eq + 1).trim();
    let expired = value === '';
    for (const attribute of attributes) {
      const [key = '', val = ''] = attribute.split('=').map((s) => s.trim());
      if (key.toLowerCase() === 'max-age' && Number(val) <= 0) expired = true;
      if (key.toLowerCase() === 'expires' && Date.parse(val) <= Date.now()) expired = true;
    }
    if (expired) {
      if (session.jar.delete(name)) session.cookieChanges++;
    } else if (session.jar.get(name) !== value) {
      session.jar.set(name, value);
      session.cookieChanges++;
    }
  }
}

const cookieHeader = (session: Session) => [...session.jar].map(([name, value]) => `${name}=${value}`).join('; ');

interface CallResult {
  outcome: Outcome;
  startedAt: number;
  endedAt: number;
  requestId: string;
  description?: string;
  retryAfter?: string | null;
}

let requestCounter = 0;

/** One API call of one tab: real HTTP, the session's cookies, X-CSRF, Set-Cookie applied. */
async function call(session: Session, instance: Instance, tag: string): Promise<CallResult> {
  const requestId = `soak-${session.login}-${tag}-${(++requestCounter).toString(36)}-${instance.name}`;
  const startedAt = Date.now();
  const headers: Record<string, string> = { 'x-csrf': '1', 'x-request-id': requestId, accept: 'application/json' };
  const cookie = cookieHeader(session);
  if (cookie) headers.cookie = cookie;
  try {
    const response = await fetch(`${instance.base}/api/soak/${session.login}/${tag}`, {
      headers,
      redirect: 'manual',
      signal: AbortSignal.timeout(settings.requestTimeoutMs),
    });
    applySetCookies(session, response.headers.getSetCookie());
    const text = await response.text();
    const endedAt = Date.now();
    let body: Record<string, unknown> = {};
    try {
      body = JSON.parse(text) as Record<string, unknown>;
    } catch {
      body = { error: 'not_json' };
    }
    const error = typeof body.error === 'string' ? body.error : undefined;
    const description = typeof body.error_description === 'string' ? body.error_description.slice(0, 300) : undefined;
    const base = { startedAt, endedAt, requestId, retryAfter: response.headers.get('retry-after') };
    if (response.status === 200) {
      if (body.sub === session.login) return { ...base, outcome: { ok: true } };
      return { ...base, outcome: { ok: false, kind: `200 with sub ${String(body.sub)} (expected ${session.login})`, status: 200 } };
    }
    return {
      ...base,
      ...(description !== undefined ? { description } : {}),
      outcome: { ok: false, kind: `${response.status} ${error ?? '(no error code)'}`, status: response.status, ...(error ? { error } : {}) },
    };
  } catch (err) {
    const endedAt = Date.now();
    const e = err as Error & { cause?: { code?: string; message?: string } };
    const code = e.name === 'TimeoutError' ? 'timeout' : (e.cause?.code ?? e.name);
    return { startedAt, endedAt, requestId, description: `${e.message}${e.cause?.message ? `: ${e.cause.message}` : ''}`, outcome: { ok: false, kind: `network ${code}`, status: 0 } };
  }
}

/** Counts a call; returns what the tab should do next. */
function record(session: Session, instance: Instance, result: CallResult): 'continue' | 'retry-later' | 'lost' | 'pause' {
  const { outcome, startedAt, endedAt } = result;
  stats.requests++;
  session.requests++;
  stats.byInstance[instance.name]!.requests++;
  const latency = endedAt - startedAt;
  stats.latencies.push(latency);
  const inOutage = overlapsOutage(startedAt, endedAt);
  if (inOutage) stats.outageLatencies.push(latency);
  const bucketKey = Math.floor((startedAt - loadStartedAt) / 5000);
  const bucket = stats.timeline.get(bucketKey) ?? { requests: 0, ok: 0, expected: 0, unexpected: 0 };
  stats.timeline.set(bucketKey, bucket);
  bucket.requests++;
  if (outcome.ok) {
    stats.ok++;
    session.ok++;
    stats.byInstance[instance.name]!.ok++;
    bucket.ok++;
    return 'continue';
  }
  // During the outage the provider is down: token-handler must answer 503 idp_unavailable (session
  // kept); the test upstream cannot introspect either and answers 503 introspection_failed.
  const expected =
    inOutage && outcome.status === 503 && (outcome.error === 'idp_unavailable' || outcome.error === 'introspection_failed');
  const kind = expected ? `${outcome.kind} (during the outage)` : outcome.kind;
  if (expected) {
    count(stats.expected, kind);
    bucket.expected++;
  } else {
    count(stats.unexpected, kind);
    bucket.unexpected++;
  }
  const sample: FailureSample = {
    kind,
    session: session.login,
    instance: instance.name,
    requestId: result.requestId,
    startedAt: rel(startedAt),
    endedAt: rel(endedAt),
    status: outcome.status,
    ...(outcome.error ? { error: outcome.error } : {}),
    ...(result.description ? { description: result.description } : {}),
    ...(result.retryAfter !== undefined ? { retryAfter: result.retryAfter } : {}),
  };
  if (session.failures.length < 40) session.failures.push(sample);
  const sampled = stats.samplesPerKind.get(kind) ?? 0;
  if (!expected && sampled < 25) {
    stats.samplesPerKind.set(kind, sampled + 1);
    stats.samples.push(sample);
  }
  if (outcome.status === 401) {
    if (session.lostAt === undefined) {
      session.lostAt = endedAt;
      session.lostBy = `${outcome.kind} on ${instance.name} (${result.requestId})`;
      loud(`session ${session.login} LOST: ${session.lostBy}`);
    }
    return 'lost';
  }
  return outcome.status === 503 ? 'retry-later' : 'pause';
}

async function tab(session: Session, tabIndex: number, instances: Instance[]): Promise<void> {
  // Tabs start spread over the first think interval.
  await sleep(between(0, settings.thinkMs.max));
  let next = tabIndex % 2;
  for (let n = 0; Date.now() < loadEndsAt && session.lostAt === undefined; n++) {
    const instance = instances[next]!;
    next = 1 - next;
    const result = await call(session, instance, `t${tabIndex}-${n}`);
    const verdict = record(session, instance, result);
    if (verdict === 'lost') return;
    const wait =
      verdict === 'retry-later'
        ? between(settings.retryAfter503Ms.min, settings.retryAfter503Ms.max)
        : verdict === 'pause'
          ? settings.retryAfterOtherFailureMs
          : between(settings.thinkMs.min, settings.thinkMs.max);
    await sleep(Math.max(0, Math.min(wait, loadEndsAt - Date.now())));
  }
}

async function loginAll(a: Instance): Promise<Session[]> {
  const sessions: Session[] = Array.from({ length: settings.sessions }, (_, index) => ({
    index,
    login: `soak-${String(index + 1).padStart(3, '0')}`,
    jar: new Map<string, string>(),
    cookieChanges: 0,
    requests: 0,
    ok: 0,
    failures: [],
  }));
  let nextIndex = 0;
  const worker = async () => {
    while (nextIndex < sessions.length) {
      const session = sessions[nextIndex++]!;
      const browser = new TestBrowser(a.app);
      const callback = await browser.login({ login: session.login, returnTo: '/' });
      const cookie = browser.cookies.get(SESSION_COOKIE);
      if (callback.statusCode !== 302 || !cookie) {
        throw new Error(`login of ${session.login} failed: ${callback.statusCode} ${callback.body.slice(0, 300)}`);
      }
      session.jar.set(SESSION_COOKIE, cookie);
      browser.responses.length = 0;
    }
  };
  await Promise.all(Array.from({ length: settings.loginConcurrency }, worker));
  return sessions;
}

// ---------------------------------------------------------------------------
// Reporting
// ---------------------------------------------------------------------------

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

function latencySummary(values: number[]): Record<string, number> {
  const sorted = [...values].sort((x, y) => x - y);
  return {
    count: sorted.length,
    p50: percentile(sorted, 50),
    p95: percentile(sorted, 95),
    p99: percentile(sorted, 99),
    max: sorted[sorted.length - 1] ?? 0,
  };
}

function table(rows: Array<Array<string | number>>, header: string[]): string {
  const all = [header, ...rows.map((r) => r.map(String))];
  const widths = header.map((_, i) => Math.max(...all.map((r) => String(r[i] ?? '').length)));
  const line = (r: Array<string | number>) => r.map((c, i) => (typeof c === 'number' ? String(c).padStart(widths[i]!) : String(c).padEnd(widths[i]!))).join('  ');
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

const mapObject = (map: Map<string, number>) => Object.fromEntries([...map].sort((x, y) => y[1] - x[1]));

/** Prometheus text → the samples of one metric, keyed by their label set. */
function metricSamples(text: string, name: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    const match = /^[^{ ]+(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (match) out[match[1] ?? '{}'] = Number(match[2]);
  }
  return out;
}

let lastResults: Record<string, unknown> | undefined;
let sessionsForPartial: Session[] = [];

function partialState(): Record<string, unknown> {
  return {
    requests: stats.requests,
    ok: stats.ok,
    expectedFailures: mapObject(stats.expected),
    unexpectedFailures: mapObject(stats.unexpected),
    sessionsLost: sessionsForPartial.filter((s) => s.lostAt !== undefined).map((s) => s.login),
  };
}

function writeResults(results: Record<string, unknown>): string {
  mkdirSync(resultsDir, { recursive: true });
  const file = `${resultsDir}latest.json`;
  writeFileSync(file, `${JSON.stringify(results, null, 2)}\n`);
  lastResults = results;
  return file;
}

// ---------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------

async function main(): Promise<number> {
  const loadavgAtStart = loadavg();
  progress(
    `soak: ${settings.sessions} sessions × ${settings.tabsPerSession} tabs for ${settings.loadSeconds} s, provider down at ${settings.outageAtSeconds} s for ${settings.outageSeconds} s; ` +
      `${settings.accessTokenTtlSeconds} s access tokens, refresh skew ${settings.refreshSkewSeconds} s, rotation with reuse detection; ${cpus().length} cores, load average ${loadavgAtStart.map((l) => l.toFixed(1)).join(' ')}`,
  );
  if (loadavgAtStart[0]! > cpus().length) {
    loud(`the machine is already busy (load average ${loadavgAtStart[0]!.toFixed(1)} on ${cpus().length} cores): latencies and timeouts below are distorted by other processes`);
  }
  const redis = await startRedis();
  progress(`redis: ${redis.own ? 'own redis-server' : 'shared'} at ${redis.url}, key prefix ${redis.keyPrefix}`);

  idp = spawnChild(new URL('./lib/idp-child.ts', import.meta.url), { callTimeoutMs: 20_000 });
  const info = await idp.call<IdpInfo>('start', { redirectUris: [REDIRECT_URI], accessTokenTtlSeconds: settings.accessTokenTtlSeconds }, 30_000);
  progress(`provider ${info.issuer} and upstream ${info.upstreamUrl} (child process ${idp.process.pid})`);

  const config = tokenHandlerConfig(info, redis);
  const instances = [await startInstance('A', config), await startInstance('B', config)];
  progress(`token-handler A ${instances[0]!.base}, B ${instances[1]!.base} (store: redis, shared prefix)`);

  const loginStarted = Date.now();
  const sessions = await loginAll(instances[0]!);
  sessionsForPartial = sessions;
  progress(`${sessions.length} sessions logged in through A in ${((Date.now() - loginStarted) / 1000).toFixed(1)} s`);

  // ---- load phase, with the outage -------------------------------------------------------
  await idp.call('markLoadStart');
  const elu0 = performance.eventLoopUtilization();
  const cpu0 = process.cpuUsage();
  loadStartedAt = Date.now();
  loadEndsAt = loadStartedAt + settings.loadSeconds * 1000;
  progress(`load phase: ${settings.loadSeconds} s`);

  const outageRun = (async () => {
    await sleep(settings.outageAtSeconds * 1000);
    outage.stopRequestedAt = Date.now();
    const stopped = await idp!.call<{ at: number; graceful: boolean; drained?: { ms: number; completedWhileDraining: number } }>('stopProvider', {
      graceful: settings.outageMode === 'graceful',
    });
    outage.stoppedAt = stopped.at;
    outage.drained = stopped.drained;
    loud(
      `provider STOPPED (load phase +${((outage.stoppedAt - loadStartedAt) / 1000).toFixed(1)} s, ${
        stopped.graceful ? `graceful: token endpoint drained in ${stopped.drained!.ms} ms, ${stopped.drained!.completedWhileDraining} in-flight grant(s) answered` : 'abrupt: connections cut'
      })`,
    );
    await sleep(Math.max(0, outage.stopRequestedAt + settings.outageSeconds * 1000 - Date.now()));
    outage.restartRequestedAt = Date.now();
    const back = await idp!.call<{ at: number }>('restartProvider', undefined, 30_000);
    outage.backAt = back.at;
    loud(`provider BACK on the same port with the same state (load phase +${((outage.backAt - loadStartedAt) / 1000).toFixed(1)} s, down ${((outage.backAt - outage.stopRequestedAt) / 1000).toFixed(1)} s)`);
  })();

  const ticker = setInterval(() => {
    const lost = sessions.filter((s) => s.lostAt !== undefined).length;
    const unexpected = [...stats.unexpected.values()].reduce((x, y) => x + y, 0);
    const expected = [...stats.expected.values()].reduce((x, y) => x + y, 0);
    progress(`requests ${stats.requests}, ok ${stats.ok}, expected failures ${expected}, UNEXPECTED ${unexpected}, sessions lost ${lost}`);
  }, 10_000);

  const tabs = sessions.flatMap((session) => Array.from({ length: settings.tabsPerSession }, (_, t) => tab(session, t, instances)));
  await Promise.all(tabs);
  await outageRun;
  clearInterval(ticker);
  const loadEndedAt = Date.now();
  const mainElu = performance.eventLoopUtilization(elu0).utilization;
  const cpuUsed = process.cpuUsage(cpu0);
  progress(`load phase over: ${stats.requests} requests`);

  // ---- verification: every session, both instances, after a refresh since the restart --------
  let report = await idp.call<IdpReport>('report');
  const refreshedSinceRestart = (login: string, events: GrantEvent[]) =>
    events.some((e) => e.grantType === 'refresh_token' && e.accountId === login && e.status === 200 && e.at >= outage.backAt);
  const verifyDeadline = Date.now() + 8000;
  for (;;) {
    const pendingSessions = sessions.filter((s) => s.lostAt === undefined && !refreshedSinceRestart(s.login, report.grantEvents));
    if (pendingSessions.length === 0 || Date.now() > verifyDeadline) break;
    // Let the token of those sessions come due, then touch them (through A) to get them refreshed.
    progress(`${pendingSessions.length} session(s) not refreshed since the restart yet: touching them`);
    await sleep(1000);
    await Promise.all(pendingSessions.map((s) => call(s, instances[0]!, 'pre-verify').then((r) => record(s, instances[0]!, r))));
    report = await idp.call<IdpReport>('report');
  }
  const notRefreshedSinceRestart = sessions.filter((s) => !refreshedSinceRestart(s.login, report.grantEvents)).map((s) => s.login);

  await Promise.all(
    sessions.map(async (session) => {
      session.final = [];
      for (const instance of instances) {
        const result = await call(session, instance, `final`);
        const entry: { instance: string; status: number; error?: string } = { instance: instance.name, status: result.outcome.ok ? 200 : result.outcome.status };
        if (!result.outcome.ok) {
          entry.error = result.outcome.kind;
          if (result.outcome.status === 401 && session.lostAt === undefined) {
            session.lostAt = result.endedAt;
            session.lostBy = `final call: ${result.outcome.kind} on ${instance.name} (${result.requestId})`;
          }
        }
        session.final.push(entry);
      }
    }),
  );
  const finalFailures = sessions.filter((s) => s.final?.some((f) => f.status !== 200));
  progress(`final verification: ${sessions.length - finalFailures.length}/${sessions.length} sessions answered 200 on both instances`);

  // ---- logout during refresh: an ended session stays ended -------------------------------
  progress('logout-during-refresh phase: 10 fresh sessions log out while their refresh waits on the provider');
  const logoutPhase = await logoutDuringRefresh(instances, idp, 10, (index) => `soak-logout-${String(index + 1).padStart(3, '0')}`);
  progress(`logout-during-refresh phase: ${logoutPhase.logoutsDuringRefresh}/${logoutPhase.sessions} logouts landed during a refresh, sessions resurrected ${logoutPhase.resurrected}`);

  // ---- collect --------------------------------------------------------------------------
  report = await idp.call<IdpReport>('report');
  // Logouts revoke grants on purpose; only a revocation of a load-phase session is a loss.
  const loggedOut = new Set(logoutPhase.accounts);
  report.revocations = report.revocations.filter((r) => r.accountId === undefined || !loggedOut.has(r.accountId));
  const metricsText = await Promise.all(instances.map(async (i) => (await i.app.inject({ method: 'GET', url: '/metrics' })).body));

  const refreshEvents = report.grantEvents.filter((e) => e.grantType === 'refresh_token');
  const refreshOkBySession = new Map(sessions.map((s) => [s.login, 0]));
  for (const e of refreshEvents) if (e.status === 200 && e.accountId !== undefined) refreshOkBySession.set(e.accountId, (refreshOkBySession.get(e.accountId) ?? 0) + 1);
  const perSession = [...refreshOkBySession.values()];
  const tokenEndpointByKind = new Map<string, number>();
  for (const r of report.tokenRequests) count(tokenEndpointByKind, `${r.grantType} ${r.status}${r.error ? ` ${r.error}` : ''}`);
  const tokenEndpointErrors = report.tokenRequests.filter((r) => r.status >= 400);
  const invalidGrants = tokenEndpointErrors.filter((r) => r.error === 'invalid_grant');
  const invalidGrantEvents = refreshEvents.filter((e) => e.error === 'invalid_grant');
  const undelivered = report.grantEvents.filter((e) => e.delivered === false);

  const lost = sessions.filter((s) => s.lostAt !== undefined);
  const unexpectedTotal = [...stats.unexpected.values()].reduce((x, y) => x + y, 0);
  const expectedTotal = [...stats.expected.values()].reduce((x, y) => x + y, 0);
  const unverified = sessions.filter((s) => s.lostAt === undefined && s.final?.some((f) => f.status !== 200));

  const instanceSummaries = instances.map((instance, i) => {
    const kept = instance.logs.kept;
    const warnAndUp = new Map<string, number>();
    for (const line of kept) if ((line.level ?? 0) >= 40) count(warnAndUp, `${line.level === 40 ? 'warn' : line.level === 50 ? 'error' : `level ${line.level}`}: ${line.msg}${typeof line.err === 'string' ? ` — ${line.err.replace(/\(.*\)/, '(…)')}` : ''}`);
    const sessionEnded = kept.filter((line) => line.msg === 'session ended');
    return {
      instance: instance.name,
      base: instance.base,
      requests: stats.byInstance[instance.name],
      logLinesByLevel: instance.logs.byLevel,
      warningsAndErrors: mapObject(warnAndUp),
      sessionsEnded: sessionEnded.map((line) => ({ at: rel(line.time ?? 0), reason: line.reason, session: line.session, reqId: line.reqId })),
      refreshAttempts: metricSamples(metricsText[i]!, 'token_handler_refresh_attempts_total'),
      refreshJoins: metricSamples(metricsText[i]!, 'token_handler_refresh_joins_total'),
    };
  });

  // Logs of the requests that failed unexpectedly (by request id), for the investigation.
  const sampleIds = new Set(stats.samples.map((s) => s.requestId));
  const logsOfFailures = instances.flatMap((instance) =>
    instance.logs.kept.filter((line) => typeof line.reqId === 'string' && sampleIds.has(line.reqId)).map((line) => ({ instance: instance.name, ...line, at: rel(line.time ?? 0) })),
  );

  // Evidence per lost session: its token-endpoint history at the provider, its failed requests,
  // and every kept token-handler log line of its requests (request ids carry the session's login).
  const logLine = (instance: Instance, line: LogLine) => ({ instance: instance.name, at: rel(line.time ?? 0), level: line.level, msg: line.msg, reqId: line.reqId, status: line.status, ms: line.ms, err: line.err, reason: line.reason });
  const lostEvidence = lost.map((session) => ({
    session: session.login,
    lostAt: rel(session.lostAt!),
    lostBy: session.lostBy,
    providerGrants: report.grantEvents
      .filter((e) => e.accountId === session.login)
      .map((e) => ({ at: rel(e.at), incarnation: e.incarnation, grantType: e.grantType, status: e.status, error: e.error, description: e.errorDescription, rotations: e.rotations, delivered: e.delivered })),
    failures: session.failures,
    tokenHandlerLogs: instances
      .flatMap((instance) => instance.logs.kept.filter((line) => typeof line.reqId === 'string' && line.reqId.startsWith(`soak-${session.login}-`)).map((line) => logLine(instance, line)))
      .sort((x, y) => x.at - y.at)
      .slice(0, 80),
  }));
  // Why a refresh token was presented twice (reuse detection): for every invalid_grant, the earlier
  // successful refresh with the same token, and what token-handler logged for that session around it.
  const sessionWarnings = (login: string) =>
    instances.flatMap((instance) =>
      instance.logs.kept
        .filter((line) => (line.level ?? 0) >= 40 && typeof line.reqId === 'string' && line.reqId.startsWith(`soak-${login}-`))
        .map((line) => ({ instance: instance.name, at: line.time ?? 0, err: String(line.err ?? line.msg ?? '') })),
    );
  const reuseDiagnosis = invalidGrantEvents.map((e) => {
    const spent = report.grantEvents
      .filter((g) => g.grantType === 'refresh_token' && g.accountId === e.accountId && g.status === 200 && g.rotations === e.rotations && g.at <= e.at)
      .pop();
    if (!e.accountId || !spent) return { session: e.accountId, at: rel(e.at), cause: 'other: no earlier successful use of that refresh token was seen' };
    const near = sessionWarnings(e.accountId).filter((w) => Math.abs(w.at - spent.at) <= 2000);
    const timedOut = near.find((w) => /TIMEOUT|TimeoutError|timed out/i.test(w.err));
    const closed = near.find((w) => /fetch failed|other side closed|ECONNRESET|socket/i.test(w.err));
    const cause = timedOut
      ? `response lost: token-handler ${timedOut.instance} gave up (oidc.timeoutMs) ${((timedOut.at - spent.at) / 1000).toFixed(3)} s from the provider completing that refresh, and kept the spent refresh token`
      : (closed || spent.delivered === false) && spent.at >= outage.stopRequestedAt - 1000 && spent.at <= outage.stoppedAt + 1000
        ? `response lost to the outage: the provider stopped (${settings.outageMode}) while answering a refresh it had completed; token-handler kept the spent refresh token (inherent to rotation with reuse detection when a provider dies mid-answer)`
        : closed || spent.delivered === false
          ? `response lost: the connection closed under a refresh the provider completed (${closed ? `token-handler ${closed.instance}: ${closed.err}` : 'provider side'})`
        : 'the same refresh token was sent twice with no failure seen by token-handler: two token-endpoint calls for one refresh token (cross-replica coordination did not hold, e.g. the lock expired while its holder was still working)';
    return { session: e.accountId, at: rel(e.at), spentAt: rel(spent.at), spentBy: 'provider 200 (same refresh token)', rotations: e.rotations, cause };
  });
  const providerRefreshOk = refreshEvents.filter((e) => e.status === 200).length;
  const tokenHandlerRefreshOk = instanceSummaries.reduce((sum, th) => sum + (th.refreshAttempts['{outcome="success"}'] ?? 0), 0);
  const tokenHandlerRefreshTimeouts = instances.reduce(
    (sum, instance) => sum + instance.logs.kept.filter((line) => (line.level ?? 0) >= 40 && /TIMEOUT|TimeoutError|timed out/i.test(String(line.err ?? ''))).length,
    0,
  );

  const warnLogs = instances
    .flatMap((instance) => instance.logs.kept.filter((line) => (line.level ?? 0) >= 40).map((line) => logLine(instance, line)))
    .sort((x, y) => x.at - y.at);

  const passed = logoutPhase.resurrected === 0 && lost.length === 0 && unexpectedTotal === 0 && invalidGrants.length === 0 && report.revocations.length === 0 && unverified.length === 0 && notRefreshedSinceRestart.length === 0;

  const results = {
    passed,
    startedAt: new Date(t0).toISOString(),
    durationSeconds: rel(Date.now()),
    settings,
    machine: { cores: cpus().length, loadavgAtStart, loadavgAtEnd: loadavg(), node: process.version },
    timeline: {
      loadPhase: { from: rel(loadStartedAt), to: rel(loadEndedAt) },
      outageMode: settings.outageMode,
      providerStopRequested: rel(outage.stopRequestedAt),
      tokenEndpointDrained: outage.drained ?? null,
      providerStopped: rel(outage.stoppedAt),
      providerBack: rel(outage.backAt),
      outageSeconds: Math.round(outage.backAt - outage.stopRequestedAt) / 1000,
      per5Seconds: [...stats.timeline].sort((x, y) => x[0] - y[0]).map(([k, v]) => ({ from: k * 5, ...v })),
    },
    requests: {
      total: stats.requests,
      successes: stats.ok,
      byInstance: stats.byInstance,
      perSecond: Math.round(stats.requests / ((loadEndedAt - loadStartedAt) / 1000)),
      latencyMs: latencySummary(stats.latencies),
      latencyDuringOutageMs: latencySummary(stats.outageLatencies),
    },
    failures: {
      expected: { total: expectedTotal, byKind: mapObject(stats.expected) },
      unexpected: { total: unexpectedTotal, byKind: mapObject(stats.unexpected), samples: stats.samples },
    },
    sessions: {
      total: sessions.length,
      lost: lost.length,
      lostDetail: lost.map((s) => ({ session: s.login, at: rel(s.lostAt!), by: s.lostBy })),
      verifiedOnBothInstances: sessions.length - finalFailures.length,
      finalFailures: finalFailures.map((s) => ({ session: s.login, final: s.final })),
      notRefreshedSinceRestart,
      cookieChanges: sessions.reduce((sum, s) => sum + s.cookieChanges, 0),
    },
    logoutDuringRefresh: {
      sessions: logoutPhase.sessions,
      logoutsDuringRefresh: logoutPhase.logoutsDuringRefresh,
      servedAfterLogout: logoutPhase.servedAfterLogout,
      resurrected: logoutPhase.resurrected,
    },
    refreshes: {
      atProvider: {
        refreshGrantsOk: perSession.reduce((x, y) => x + y, 0),
        perSession: {
          mean: Math.round((perSession.reduce((x, y) => x + y, 0) / sessions.length) * 10) / 10,
          min: Math.min(...perSession),
          max: Math.max(...perSession),
        },
        unattributedRefreshGrants: refreshEvents.filter((e) => e.accountId === undefined).length,
        invalidGrant: invalidGrants.length,
        /** Refreshes the provider completed that token-handler never took (timeouts, closed connections). */
        responsesLost: providerRefreshOk - tokenHandlerRefreshOk,
        tokenHandlerRefreshTimeoutLogLines: tokenHandlerRefreshTimeouts,
        reuseDiagnosis,
        invalidGrantDetail: invalidGrantEvents.map((e) => ({ session: e.accountId, at: rel(e.at), incarnation: e.incarnation, description: e.errorDescription, rotations: e.rotations })),
        responsesNotDelivered: undelivered.map((e) => ({ grantType: e.grantType, session: e.accountId, at: rel(e.at), doneAt: rel(e.doneAt), status: e.status, incarnation: e.incarnation, rotations: e.rotations })),
      },
      tokenEndpointByKind: mapObject(tokenEndpointByKind),
      tokenEndpointErrors: tokenEndpointErrors.map((r) => ({ at: rel(r.at), grantType: r.grantType, status: r.status, error: r.error, description: r.errorDescription, incarnation: r.incarnation })),
      providerServerErrors: report.serverErrors,
      providerLifecycle: report.lifecycle.map((l) => ({ what: l.what, at: rel(l.at) })),
      grantsRevokedByProvider: report.revocations.map((r) => ({ session: r.accountId, at: rel(r.at), incarnation: r.incarnation })),
    },
    tokenHandlers: instanceSummaries,
    logsOfUnexpectedFailures: logsOfFailures.slice(0, 200),
    lostSessionEvidence: lostEvidence,
    tokenHandlerWarningsAndErrors: { total: warnLogs.length, first: warnLogs.slice(0, 600) },
    load: {
      mainProcess: { eventLoopUtilization: Math.round(mainElu * 100) / 100, cpuSeconds: Math.round(((cpuUsed.user + cpuUsed.system) / 1e6) * 10) / 10, holds: 'token-handler A and B, load generator' },
      idpProcess: { eventLoopUtilization: Math.round(report.eventLoopUtilization * 100) / 100, cpuSeconds: Math.round(report.cpuSeconds * 10) / 10, holds: 'oidc-provider, upstream' },
      upstreamRequests: report.upstreamRequests,
      introspectionCalls: report.introspectionCalls,
    },
  };
  const file = writeResults(results);
  printSummary(results, file);
  return passed ? 0 : 1;
}

function printSummary(r: Record<string, any>, file: string): void {
  const lines: string[] = [];
  lines.push('', '='.repeat(78), `SOAK ${r.passed ? 'PASSED' : 'FAILED'} in ${r.durationSeconds} s`, '='.repeat(78));
  lines.push(
    table(
      [
        ['requests', r.requests.total],
        ['  successes', r.requests.successes],
        ['  per second', r.requests.perSecond],
        ['  on A / on B', `${r.requests.byInstance.A.requests} / ${r.requests.byInstance.B.requests}`],
        ['  latency p50/p95/p99/max ms', `${r.requests.latencyMs.p50}/${r.requests.latencyMs.p95}/${r.requests.latencyMs.p99}/${r.requests.latencyMs.max}`],
        ['expected failures (outage)', r.failures.expected.total],
        ['UNEXPECTED failures', r.failures.unexpected.total],
        ['sessions', r.sessions.total],
        ['  LOST', r.sessions.lost],
        ['  verified on A and B at the end', r.sessions.verifiedOnBothInstances],
        ['  not refreshed since the restart', r.sessions.notRefreshedSinceRestart.length],
        ['logout during refresh: sessions', r.logoutDuringRefresh.sessions],
        ['  logouts landed during a refresh', r.logoutDuringRefresh.logoutsDuringRefresh],
        ['  RESURRECTED', r.logoutDuringRefresh.resurrected],
        ['refresh grants ok at the provider', r.refreshes.atProvider.refreshGrantsOk],
        ['  per session mean/min/max', `${r.refreshes.atProvider.perSession.mean}/${r.refreshes.atProvider.perSession.min}/${r.refreshes.atProvider.perSession.max}`],
        ['  invalid_grant at the provider', r.refreshes.atProvider.invalidGrant],
        ['  completed at the provider, not taken', r.refreshes.atProvider.responsesLost],
        ['  token-handler refresh timeouts (log lines)', r.refreshes.atProvider.tokenHandlerRefreshTimeoutLogLines],
        ['  grants revoked by the provider', r.refreshes.grantsRevokedByProvider.length],
        ['provider down (s)', `${r.timeline.outageSeconds} (${r.timeline.outageMode}, from ${r.timeline.providerStopRequested} s to ${r.timeline.providerBack} s)`],
        ['event loop use main / idp child', `${r.load.mainProcess.eventLoopUtilization} / ${r.load.idpProcess.eventLoopUtilization}`],
        ['machine load average (1 min) start / end', `${r.machine.loadavgAtStart[0].toFixed(1)} / ${r.machine.loadavgAtEnd[0].toFixed(1)} on ${r.machine.cores} cores`],
      ],
      ['', 'value'],
    ),
  );
  const kinds = (title: string, byKind: Record<string, number>) => {
    const rows = Object.entries(byKind).map(([kind, n]) => [kind, n] as Array<string | number>);
    lines.push('', title, rows.length ? table(rows, ['kind', 'count']) : '  (none)');
  };
  kinds('Expected failures (during the outage):', r.failures.expected.byKind);
  kinds('UNEXPECTED failures:', r.failures.unexpected.byKind);
  kinds('Token endpoint calls by grant, status and error:', r.refreshes.tokenEndpointByKind);
  lines.push('', 'Per 5 s of the load phase:');
  lines.push(table(r.timeline.per5Seconds.map((b: any) => [`${b.from}s`, b.requests, b.ok, b.expected, b.unexpected]), ['from', 'requests', 'ok', 'expected', 'UNEXPECTED']));
  for (const th of r.tokenHandlers) {
    lines.push('', `token-handler ${th.instance}: refresh attempts ${JSON.stringify(th.refreshAttempts)}, joins ${JSON.stringify(th.refreshJoins)}`);
    for (const [msg, n] of Object.entries(th.warningsAndErrors as Record<string, number>)) lines.push(`  ${String(n).padStart(6)} × ${msg}`);
  }
  if (r.sessions.lost > 0) {
    lines.push('', 'Lost sessions:');
    for (const l of r.sessions.lostDetail) lines.push(`  ${l.session} at ${l.at} s: ${l.by}`);
  }
  if (r.refreshes.atProvider.reuseDiagnosis.length > 0) {
    lines.push('', 'Refresh-token reuse at the provider (invalid_grant), and why:');
    const causes = new Map<string, string[]>();
    for (const d of r.refreshes.atProvider.reuseDiagnosis) {
      const cause = String(d.cause).replace(/token-handler [AB]/, 'token-handler').replace(/-?\d+\.\d{3} s from/, 'N s from');
      causes.set(cause, [...(causes.get(cause) ?? []), `${d.session}@${d.at}s`]);
    }
    for (const [cause, who] of causes) lines.push(`  ${who.length} × ${cause}`, `      ${who.join(' ')}`);
  }
  if (r.failures.unexpected.samples.length) {
    lines.push('', 'First unexpected failures:');
    for (const f of r.failures.unexpected.samples.slice(0, 8)) lines.push(`  ${f.kind} on ${f.instance}, ${f.session}, ${f.startedAt}–${f.endedAt} s, ${f.requestId}${f.description ? `: ${f.description}` : ''}`);
  }
  lines.push('', `results: ${file}`, '');
  console.log(lines.join('\n'));
}

let exitCode = 1;
try {
  exitCode = await main();
} catch (err) {
  loud(`soak crashed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  try {
    if (!lastResults) writeResults({ passed: false, crashed: String(err), partial: partialState() });
  } catch {
    // nothing more to save
  }
  exitCode = 1;
} finally {
  // Bounded step by step (at most ~6 s); the watchdog still covers the whole run.
  await cleanup();
  clearTimeout(watchdog);
}
process.exit(exitCode);
