/**
 * Building blocks shared by `bench/run.ts`, `bench/profile.ts`, `bench/instructions.ts` and
 * `bench/compare.ts`: the provider and upstream children started for one another, token-handler built
 * from configuration exactly as the CLI does (but with a chosen log sink and clock), the
 * bare-proxy baseline, logging in through the test harness, and small helpers.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createConnection } from 'node:net';
import type { AddressInfo } from 'node:net';
import type { IntervalHistogram } from 'node:perf_hooks';
import Fastify, { type FastifyInstance } from 'fastify';
import httpProxy from '@fastify/http-proxy';
import { ConfigError, parseConfig } from '../../src/config/load.js';
import type { Config } from '../../src/config/types.js';
import { PUBLIC_URL, REDIRECT_URI, SECRET, TestBrowser } from '../../test/support/bff.js';
import { completeProviderLogin } from '../../test/support/browser.js';
import type { Child } from './rpc.js';

export { PUBLIC_URL, REDIRECT_URI, SECRET };

/**
 * token-handler as users run it: the compiled dist/ (`npm start`, the container image), not
 * src/ through tsx's on-the-fly transform, which is other code (esbuild's, with every named
 * function wrapped in a `__name` defineProperty call) and was measured slower on the hot
 * path than tsc's build. `npm run bench` builds first. The configuration is still parsed
 * and typed by src/: it is plain data, the same for both.
 */
type Built = { buildApp: (typeof import('../../src/app.js'))['buildApp']; logDestination: (typeof import('../../src/ops/log-destination.js'))['logDestination'] };
const built: Built | Error = await importBuilt();

async function importBuilt(): Promise<Built | Error> {
  const root = fileURLToPath(new URL('../../', import.meta.url));
  const app = join(root, 'dist', 'app.js');
  if (!existsSync(app)) return new Error('bench: dist/ is missing: run `npm run build` first (npm run bench and bench:instructions do)');
  const newestSource = newestMtimeMs(join(root, 'src'));
  if (newestSource > statSync(app).mtimeMs) return new Error('bench: dist/ is older than src/: run `npm run build` first (npm run bench and bench:instructions do)');
  const [appModule, logModule] = await Promise.all([
    import(new URL('../../dist/app.js', import.meta.url).href) as Promise<typeof import('../../src/app.js')>,
    import(new URL('../../dist/ops/log-destination.js', import.meta.url).href) as Promise<typeof import('../../src/ops/log-destination.js')>,
  ]);
  return { buildApp: appModule.buildApp, logDestination: logModule.logDestination };
}

function newestMtimeMs(dir: string): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    newest = Math.max(newest, entry.isDirectory() ? newestMtimeMs(path) : statSync(path).mtimeMs);
  }
  return newest;
}

/** The compiled token-handler, or the reason it cannot be used (thrown where it is needed; run.ts asks first, to fail fast). */
export function tokenHandlerBuild(): Built {
  if (built instanceof Error) throw built;
  return built;
}
export const SESSION_COOKIE = '__Host-th_session';
/** Path the load uses: token-handler and the bare proxy serve it under /api, the upstream at /items. */
export const API_PATH = '/api/items';
export const UPSTREAM_PATH = '/items';

export type Store = 'cookie' | 'memory' | 'redis';

export interface ProviderInfo {
  issuer: string;
  clients: { basic: { clientId: string; clientSecret: string }; api: { clientId: string; clientSecret: string } };
  endpoints: { introspection: string; token: string };
}

/**
 * Starts the provider (in its child) for the bench's browser, then the upstream (in its
 * child) checking every token by introspection at that provider.
 */
export async function startProviderAndUpstream(
  providerChild: Child,
  upstreamChild: Child,
  accessTokenTtlSeconds = 3600,
): Promise<{ provider: ProviderInfo; upstream: { url: string } }> {
  const provider = await providerChild.call<ProviderInfo>('start', { redirectUris: [REDIRECT_URI], accessTokenTtlSeconds });
  const upstream = await upstreamChild.call<{ url: string }>('start', {
    introspectionEndpoint: provider.endpoints.introspection,
    clientId: provider.clients.api.clientId,
    clientSecret: provider.clients.api.clientSecret,
  });
  return { provider, upstream };
}

/**
 * Where token-handler's logs go: `/dev/null`, through the same kind of destination
 * token-handler writes stdout with by default (pino's asynchronous SonicBoom, `logging.sync:
 * false`). The cost of building, serialising and writing every log line is therefore
 * measured; only the consumer of stdout is left out.
 */
export class DevNullLog {
  private readonly destination = tokenHandlerBuild().logDestination('/dev/null', true);
  lines = 0;
  /**
   * Log messages other than the per-request line, by message (and reason or error),
   * counted on the side: what happened in a storm (sessions ended, refresh failures).
   */
  readonly warnings = new Map<string, number>();
  /** Request lines (token-handler's access log writes them through here when it can). */
  writeBatched(line: string): void {
    this.lines++;
    this.destination.writeBatched(line);
  }
  write(line: string): void {
    this.lines++;
    this.destination.write(line);
    if (line.startsWith('{"level":20') || line.startsWith('{"level":10')) return;
    let key = 'unparsable log line';
    try {
      const entry = JSON.parse(line) as { level?: number; msg?: string; err?: unknown; reason?: unknown };
      const err = typeof entry.err === 'string' ? entry.err : (entry.err as { message?: string } | undefined)?.message;
      const level = entry.level !== undefined && entry.level >= 50 ? 'error' : entry.level === 40 ? 'warn' : 'info';
      key = `${level}: ${entry.msg ?? '(no msg)'}${typeof entry.reason === 'string' ? ` (${entry.reason})` : ''}${err ? `: ${err.slice(0, 120)}` : ''}`;
    } catch {
      // keep the placeholder
    }
    this.warnings.set(key, (this.warnings.get(key) ?? 0) + 1);
  }
  forget(): void {
    this.warnings.clear();
  }
  /** Messages seen, most frequent first. */
  topWarnings(limit = 6): Record<string, number> {
    return Object.fromEntries([...this.warnings.entries()].sort((a, b) => b[1] - a[1]).slice(0, limit));
  }
  close(): void {
    this.destination.close();
  }
}

export interface TokenHandlerOptions {
  provider: ProviderInfo;
  upstreamUrl: string;
  store: Store;
  redisPrefix?: string;
  now?: () => number;
  log?: DevNullLog;
  /** Merged over the defaults (e.g. logging level for an experiment). */
  extra?: Record<string, unknown>;
  /**
   * This instance logs in hundreds of browsers from one address (the storms): lift the
   * per-address sign-in rate limit where the configuration has one. The API hot path
   * is not rate limited either way.
   */
  manyLogins?: boolean;
}

/** The benchmark's token-handler configuration: defaults everywhere except what the setup needs. */
export function benchConfig(options: TokenHandlerOptions): Config {
  const session: Record<string, unknown> = { store: options.store, secrets: [SECRET] };
  if (options.store === 'redis') {
    const entries = process.env.BENCH_REDIS_LOCAL_CACHE_ENTRIES;
    session.redis = { url: 'redis://127.0.0.1:6379', keyPrefix: options.redisPrefix ?? 'bench:', ...(entries ? { localCacheEntries: Number(entries) } : {}) };
  }
  const raw = {
    publicUrl: PUBLIC_URL,
    listen: { host: '127.0.0.1', port: 0 },
    oidc: {
      issuer: options.provider.issuer,
      clientId: options.provider.clients.basic.clientId,
      clientSecret: options.provider.clients.basic.clientSecret,
    },
    routes: [{ prefix: '/api', upstream: options.upstreamUrl }],
    // As in earlier runs: no second listener.
    metrics: { onMainListener: true },
    ...options.extra,
    // Merged key by key: an extra `session` (say, a shorter idle timeout) keeps the store and secrets.
    session: { ...session, ...(options.extra?.session as Record<string, unknown> | undefined) },
  };
  if (options.manyLogins) {
    try {
      return parseConfig({ ...raw, rateLimit: { enabled: false } });
    } catch (err) {
      // A build without the rateLimit key: nothing to lift.
      if (!(err instanceof ConfigError) || !err.problems.some((p) => p.startsWith('rateLimit'))) throw err;
    }
  }
  return parseConfig(raw);
}

/**
 * The parts of a bench configuration a token-handler started from its compiled `dist/`
 * needs, as plain JSON (parseConfig runs again there): bench/lib/plain-server.mjs.
 */
export function plainConfig(config: Config): Record<string, unknown> {
  return {
    publicUrl: config.publicUrl,
    listen: { host: '127.0.0.1', port: 0 },
    oidc: { issuer: config.oidc.issuer, clientId: config.oidc.clientId, clientSecret: config.oidc.clientSecret },
    session: {
      store: config.session.store,
      secrets: config.session.secrets,
      ...(config.session.redis ? { redis: { url: config.session.redis.url, keyPrefix: config.session.redis.keyPrefix } } : {}),
    },
    routes: config.routes.map((r) => ({ prefix: r.prefix, upstream: r.upstream })),
  };
}

export interface RunningTokenHandler {
  app: FastifyInstance;
  /** http://127.0.0.1:PORT */
  url: string;
  config: Config;
  close(): Promise<void>;
}

export async function startTokenHandler(options: TokenHandlerOptions): Promise<RunningTokenHandler> {
  const config = benchConfig(options);
  const app = await tokenHandlerBuild().buildApp(config, {
    ...(options.now ? { now: options.now } : {}),
    logStream: options.log ?? new DevNullLog(),
    waitForProvider: true,
  });
  await app.listen({ port: 0, host: '127.0.0.1' });
  const { port } = app.server.address() as AddressInfo;
  return { app, url: `http://127.0.0.1:${port}`, config, close: () => app.close() };
}

/**
 * The baseline a user would otherwise run: a minimal Fastify app with @fastify/http-proxy
 * (undici defaults, which token-handler also uses: 128 connections, no pipelining) that
 * drops the Cookie header and sets a fixed Authorization header. No logger, no session.
 */
export async function startBareProxy(
  upstreamUrl: string,
  bearer: string,
  /** Further prefixes to other upstreams (the production phase: `/japi` → the introspecting upstream). */
  moreRoutes: Array<{ prefix: string; upstream: string }> = [],
  /** The WebSocket baseline's upstream (`/live`), for the WebSocket phase. */
  wsUpstreamUrl?: string,
): Promise<{ url: string; close(): Promise<void> }> {
  const app = Fastify({ logger: false });
  const authorization = `Bearer ${bearer}`;
  if (wsUpstreamUrl) {
    // The WebSocket baseline: @fastify/http-proxy's own WebSocket support with a fixed token.
    await app.register(httpProxy, {
      upstream: wsUpstreamUrl,
      prefix: '/live',
      rewritePrefix: '',
      websocket: true,
      wsClientOptions: { rewriteRequestHeaders: () => ({ authorization }) },
    });
  }
  for (const route of [{ prefix: '/api', upstream: upstreamUrl }, ...moreRoutes]) {
    await app.register(httpProxy, {
      upstream: route.upstream,
      prefix: route.prefix,
      rewritePrefix: '',
      replyOptions: {
        // reply-from hands over a fresh copy of the request headers: change it in place.
        rewriteRequestHeaders: (_request, headers) => {
          delete headers.cookie;
          headers.authorization = authorization;
          return headers;
        },
      },
    });
  }
  await app.listen({ port: 0, host: '127.0.0.1' });
  const { port } = app.server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}`, close: () => app.close() };
}

/** Logs a browser in through the harness (inject + the provider's real login pages); returns the Cookie header value. */
export async function login(app: FastifyInstance, user: string): Promise<string> {
  const browser = new TestBrowser(app);
  const start = await browser.startLogin('/');
  const callbackUrl = await completeProviderLogin(start, { login: user });
  const response = await browser.callback(callbackUrl);
  if (response.statusCode !== 302) throw new Error(`callback answered ${response.statusCode}: ${response.body}`);
  const value = browser.cookies.get(SESSION_COOKIE);
  if (!value) throw new Error(`no session cookie after login (cookies: ${[...browser.cookies.keys()].join(', ')})`);
  return `${SESSION_COOKIE}=${value}`;
}

/**
 * Up to `count` logins, `concurrency` at a time, while `keepGoing(done)` says so;
 * returns the Cookie header values of the logins that completed.
 */
export async function loginMany(
  app: FastifyInstance,
  count: number,
  options: { concurrency: number; userPrefix: string; keepGoing?: (done: number) => boolean; onProgress?: (done: number) => void },
): Promise<string[]> {
  const cookies: string[] = [];
  let next = 0;
  const worker = async () => {
    while (next < count && (options.keepGoing?.(cookies.length) ?? true)) {
      const index = next++;
      cookies.push(await login(app, `${options.userPrefix}${index}`));
      if (options.onProgress && cookies.length % 250 === 0) options.onProgress(cookies.length);
    }
  };
  await Promise.all(Array.from({ length: Math.min(options.concurrency, count) }, worker));
  return cookies;
}

/** Shows each kind of process warning once (token-handler's deprecation notices would repeat per app). */
export function warnOnce(quiet: string[] = []): void {
  const seen = new Set<string>(quiet);
  process.removeAllListeners('warning');
  process.on('warning', (warning: Error & { code?: string }) => {
    const key = warning.code ?? warning.message;
    if (seen.has(key)) return;
    seen.add(key);
    console.log(`(warning from the code under test: ${warning.code ? `${warning.code} ` : ''}${warning.message})`);
  });
}

/**
 * Does what a browser does between bursts of API calls: sends one request with its
 * cookie and keeps the session cookie the response sets, if any. The load generator has
 * no cookie jar; without this, a cookie-store session whose idle timeout slid (once a
 * minute) would be re-sealed on every request of the run, which no browser causes.
 */
export async function followSetCookie(url: string, headers: Record<string, string>): Promise<boolean> {
  const response = await fetch(url, { headers });
  await response.arrayBuffer();
  const fresh = response.headers.getSetCookie().find((c) => c.startsWith(`${SESSION_COOKIE}=`));
  if (!fresh) return false;
  const value = fresh.slice(0, fresh.indexOf(';'));
  if (value.length <= SESSION_COOKIE.length + 1) return false;
  headers.cookie = value;
  return true;
}

/** Headers a same-origin SPA sends to token-handler's API routes. */
export function browserHeaders(cookie: string): Record<string, string> {
  return { cookie, 'x-csrf': '1', accept: 'application/json' };
}

/** Whether something answers PING at 127.0.0.1:6379 (raw RESP, no client needed). */
export function redisAnswers(port = 6379, timeoutMs = 500): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: '127.0.0.1', port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('error', () => done(false));
    socket.once('connect', () => socket.write('PING\r\n'));
    socket.once('data', (data) => done(data.toString().startsWith('+PONG')));
  });
}

export function randomPrefix(): string {
  return `bench:${randomBytes(6).toString('hex')}:`;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Event-loop delay while the histogram ran, in ms (how late timers and I/O callbacks were served). */
export function lagSummary(histogram: IntervalHistogram | undefined): { p50Ms: number; p99Ms: number; maxMs: number } {
  if (!histogram) return { p50Ms: NaN, p99Ms: NaN, maxMs: NaN };
  histogram.disable();
  return { p50Ms: histogram.percentile(50) / 1e6, p99Ms: histogram.percentile(99) / 1e6, maxMs: histogram.max / 1e6 };
}
