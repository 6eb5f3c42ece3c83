/**
 * token-handler (or the bare proxy) in a process of its own: for profiling (the parent
 * drives load while this process records a CPU profile of exactly the load window, with
 * node:inspector's Profiler, the sampler behind --cpu-prof, without startup and login), and
 * as the second replica of the redis-store refresh storm (its own event loop, as a real
 * replica has).
 */
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { findSourceMap, type SourceMap } from 'node:module';
import { monitorEventLoopDelay, performance, type IntervalHistogram } from 'node:perf_hooks';
import { DevNullLog, lagSummary, login, SECRET, SESSION_COOKIE, startBareProxy, startTokenHandler, warnOnce, type ProviderInfo, type RunningTokenHandler, type Store } from './stack.js';
import { serve } from './rpc.js';
import { syntheticRecord } from './records.js';
import { Sealer } from '../../src/state/sealer.js';
import type { SessionRecord } from '../../src/state/record.js';

// The parent reports token-handler's deprecation notices; do not repeat them here.
warnOnce(['FSTDEP023']);

let closeServer: (() => Promise<void>) | undefined;
let running: RunningTokenHandler | undefined;
const log = new DevNullLog();
let lag: IntervalHistogram | undefined;

/** Added to Date.now() for token-handler's clock (the storms move time past token expiry). */
let clockOffsetMs = 0;
let session: Session | undefined;
let window: { cpu: NodeJS.CpuUsage; wall: number; elu: ReturnType<typeof performance.eventLoopUtilization> } | undefined;

serve({
  /** Starts token-handler; logs one browser in unless `login` is false. */
  async startTokenHandler(params: {
    provider: ProviderInfo;
    upstreamUrl: string;
    store: Store;
    redisPrefix: string;
    extra?: Record<string, unknown>;
    login?: boolean;
    userName?: string;
    injectClock?: boolean;
  }) {
    const { login: doLogin = true, injectClock = false, userName, ...options } = params;
    const th = await startTokenHandler({ ...options, log, ...(injectClock ? { now: () => Date.now() + clockOffsetMs } : {}) });
    closeServer = th.close;
    running = th;
    const cookie = doLogin ? await login(th.app, userName ?? `profile-${params.store}`) : undefined;
    return { url: th.url, cookie };
  },
  /** Log messages (other than the per-request line) so far, by message; `forget` starts over. */
  warnings(params?: { forget?: boolean }) {
    const top = log.topWarnings(10);
    if (params?.forget) log.forget();
    return top;
  },
  lagStart() {
    lag = monitorEventLoopDelay({ resolution: 10 });
    lag.enable();
  },
  lagStop() {
    return lagSummary(lag);
  },
  setClockOffset(params: { ms: number }) {
    clockOffsetMs = params.ms;
  },
  /**
   * `count` synthetic sessions shaped like `template` (bench/lib/records.ts), as if that many
   * browsers had logged in: the cookie store gets sealed records (same secret), the memory
   * and redis stores get the records in this instance's own store (through
   * `app.tokenHandlerState`) and a sealed `{ sid }` pointer each. Returns the Cookie header values.
   */
  async seedSessions(params: { count: number; template: SessionRecord }) {
    if (!running) throw new Error('token-handler not started');
    const { session } = running.config;
    const sealer = new Sealer([SECRET]);
    const store = running.app.tokenHandlerState.sessionStore;
    const now = Date.now();
    // As in a process whose users are active: each session last slid its idle timeout at some
    // point of the last touch interval (SessionManager: min(60 s, idle/10)), so slides (a new
    // seal, a store write) spread over time instead of all falling due in the same second.
    const touchIntervalMs = Math.min(60_000, session.idleTimeoutSeconds * 100);
    const cookies: string[] = [];
    for (let i = 0; i < params.count; i++) {
      const record = syntheticRecord(params.template, i, 'opaque', now);
      record.createdAt = now - touchIntervalMs;
      record.lastSeenAt = record.createdAt + Math.floor(Math.random() * touchIntervalMs);
      let sealed: string;
      if (session.store === 'cookie') sealed = await sealer.seal(record, session.absoluteTimeoutSeconds);
      else {
        if (!store) throw new Error(`no session store in a ${session.store}-store instance`);
        await store.create(record, session.idleTimeoutSeconds);
        sealed = await sealer.seal({ sid: record.id }, session.absoluteTimeoutSeconds);
      }
      cookies.push(`${SESSION_COOKIE}=${sealed}`);
    }
    return { cookies };
  },
  /** This process's resident set size and V8 heap, bytes. */
  memory() {
    const { rss, heapUsed } = process.memoryUsage();
    return { rss, heapUsed };
  },
  async startBareProxy(params: { upstreamUrl: string; bearer: string; moreRoutes?: Array<{ prefix: string; upstream: string }>; wsUpstreamUrl?: string }) {
    const bare = await startBareProxy(params.upstreamUrl, params.bearer, params.moreRoutes, params.wsUpstreamUrl);
    closeServer = bare.close;
    return { url: bare.url };
  },
  /** Starts a CPU-time window without the profiler (its overhead would inflate the figure). */
  cpuStart() {
    window = { cpu: process.cpuUsage(), wall: performance.now(), elu: performance.eventLoopUtilization() };
  },
  cpuStop() {
    if (!window) throw new Error('cpu window not started');
    const cpu = process.cpuUsage(window.cpu);
    const elu = performance.eventLoopUtilization(window.elu);
    return { userMs: cpu.user / 1000, systemMs: cpu.system / 1000, wallMs: performance.now() - window.wall, eventLoopUtilization: elu.utilization };
  },
  async profileStart(params: { intervalUs: number }) {
    session = new Session();
    session.connect();
    await session.post('Profiler.enable');
    await session.post('Profiler.setSamplingInterval', { interval: params.intervalUs });
    await session.post('Profiler.start');
    window = { cpu: process.cpuUsage(), wall: performance.now(), elu: performance.eventLoopUtilization() };
  },
  async profileStop(params: { file: string }) {
    if (!session || !window) throw new Error('profiler not started');
    const cpu = process.cpuUsage(window.cpu);
    const wallMs = performance.now() - window.wall;
    const elu = performance.eventLoopUtilization(window.elu);
    const { profile } = await session.post('Profiler.stop');
    session.disconnect();
    remapToSources(profile.nodes);
    writeFileSync(params.file, JSON.stringify(profile));
    return { userMs: cpu.user / 1000, systemMs: cpu.system / 1000, wallMs, eventLoopUtilization: elu.utilization };
  },
  async stop() {
    await closeServer?.();
  },
});

/**
 * tsx compiles src/ with whitespace minified (a whole file on one line), so the profile's
 * positions would all read ":1". Map them back through the source maps tsx registers.
 */
function remapToSources(nodes: Array<{ callFrame: { url: string; lineNumber: number; columnNumber: number } }>): void {
  const maps = new Map<string, SourceMap | undefined>();
  for (const { callFrame } of nodes) {
    if (!callFrame.url.startsWith('file://') || callFrame.url.includes('/node_modules/') || callFrame.lineNumber < 0) continue;
    if (!maps.has(callFrame.url)) maps.set(callFrame.url, findSourceMap(callFrame.url));
    const entry = maps.get(callFrame.url)?.findEntry(callFrame.lineNumber, callFrame.columnNumber) as
      | { originalLine?: number; originalColumn?: number }
      | undefined;
    if (entry?.originalLine === undefined) continue;
    callFrame.lineNumber = entry.originalLine;
    callFrame.columnNumber = entry.originalColumn ?? 0;
  }
}
