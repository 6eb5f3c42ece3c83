/**
 * The load generator, in a process of its own so it never shares an event loop with the
 * servers it measures (it still shares the machine's cores: see bench/README notes).
 *
 * - `slice`: one autocannon run (fixed connections, fixed duration) against one target.
 *   Latencies are taken from autocannon's per-response event (process.hrtime, sub-ms
 *   resolution; autocannon's own histogram rounds to whole milliseconds) and pooled per target.
 * - `burst`: N requests sent at once over pre-opened keep-alive connections (refresh storms),
 *   each timed individually.
 */
import { Agent, request } from 'node:http';
import autocannon from 'autocannon';
import { serve } from './rpc.js';
import { cookiesChanged, wrkSlice } from './wrk.js';

interface SliceParams {
  target: string;
  url: string;
  headers: Record<string, string>;
  connections: number;
  durationSeconds: number;
  /** Not recorded (JIT and connection warm-up). */
  warmup?: boolean;
  /** Ends after this many requests instead of `durationSeconds` (a warm-up that visits every session once). */
  amount?: number;
  /** Requests per second over all connections (open-loop latency); absent: as fast as the target answers. */
  overallRate?: number;
  /** Name of a cookie the connections keep in one shared jar (see SessionCookieJar). */
  sessionCookie?: string;
  /**
   * Many sessions (the production phase): every request carries the next cookie of the set
   * stored with `setCookies`, round-robin over its first `sessions` entries, so the sessions
   * spread over the connections; a session cookie a response sets replaces that session's
   * entry, as each browser's own jar would. `headers` are sent besides (without a cookie).
   */
  rotate?: { set: string; sessions: number; cookieName: string };
  /** wrk instead of autocannon (bench/lib/wrk.ts): timed rotating slices only. */
  generator?: 'wrk' | 'autocannon';
}

/** Cookie sets of the production phase, by name: one Cookie header value per session. */
const cookieSets = new Map<string, string[]>();

/** What the bench uses of an autocannon connection. */
interface LoadClient {
  on(event: 'headers', listener: (info: { headers: string[] }) => void): void;
  setHeaders(headers: Record<string, string>): void;
}

/**
 * The connections of a slice share one cookie jar, as a browser's requests do: once a
 * response sets the session cookie (token-handler's cookie store re-seals it when the idle
 * timeout slides, once a minute), every connection sends the new value from its next
 * request on. Without it, every response after the slide would carry the 2 KB Set-Cookie
 * again until the slice ends, which no browser causes. A cleared cookie (empty value) is
 * not taken: the bench's session must stay. It keeps one unchunked cookie and sends it
 * alone, which is what the bench's sessions are (2–3 KB, below the 3,800-byte chunk
 * size); `setHeaders` needs pipelining 1, which every slice uses.
 */
class SessionCookieJar {
  private readonly clients: LoadClient[] = [];
  private headers: Record<string, string>;
  private readonly prefix: string;

  constructor(name: string, headers: Record<string, string>) {
    this.prefix = `${name}=`;
    this.headers = { ...headers };
  }

  get cookie(): string | undefined {
    return this.headers.cookie;
  }

  attach = (client: LoadClient): void => {
    this.clients.push(client);
    client.on('headers', (info) => this.take(info.headers));
  };

  private take(raw: string[]): void {
    for (let i = 0; i + 1 < raw.length; i += 2) {
      if (raw[i]!.length !== 10 || raw[i]!.toLowerCase() !== 'set-cookie') continue;
      const value = raw[i + 1]!;
      if (!value.startsWith(this.prefix)) continue;
      const end = value.indexOf(';');
      const pair = end === -1 ? value : value.slice(0, end);
      if (pair.length === this.prefix.length || pair === this.headers.cookie) continue;
      this.headers = { ...this.headers, cookie: pair };
      for (const client of this.clients) client.setHeaders(this.headers);
    }
  }
}

interface Pool {
  latencies: Float64Array;
  count: number;
  requests: number;
  seconds: number;
  non2xx: number;
  errors: number;
  slices: Array<{ rps: number; p50: number; p99: number }>;
}

const pools = new Map<string, Pool>();

function pool(target: string): Pool {
  let p = pools.get(target);
  if (!p) pools.set(target, (p = { latencies: new Float64Array(1 << 16), count: 0, requests: 0, seconds: 0, non2xx: 0, errors: 0, slices: [] }));
  return p;
}

function push(p: Pool, value: number): void {
  if (p.count === p.latencies.length) {
    const bigger = new Float64Array(p.latencies.length * 2);
    bigger.set(p.latencies);
    p.latencies = bigger;
  }
  p.latencies[p.count++] = value;
}

export function percentile(sorted: Float64Array | number[], q: number): number {
  if (sorted.length === 0) return NaN;
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[index]!;
}

/** The cookie set a rotating slice sends, which must hold at least its `sessions` cookies. */
function cookieSetOf(rotate: NonNullable<SliceParams['rotate']>): string[] {
  const cookies = cookieSets.get(rotate.set);
  if (!cookies || cookies.length < rotate.sessions) throw new Error(`cookie set ${rotate.set} has ${cookies?.length ?? 0} cookies, ${rotate.sessions} wanted`);
  return cookies;
}

/** A measured slice's figures, added to its target's pool (warm-ups are not recorded). */
function record(params: SliceParams, slice: Pool['slices'][number], counts: { requests: number; seconds: number; non2xx: number; errors: number }, latencies: Iterable<number>): void {
  if (params.warmup) return;
  const p = pool(params.target);
  for (const value of latencies) push(p, value);
  p.requests += counts.requests;
  p.seconds += counts.seconds;
  p.non2xx += counts.non2xx;
  p.errors += counts.errors;
  p.slices.push(slice);
}

/** A slice's latencies as its quantiles stand for them: each of `quantiles` repeated for its share of `requests`. */
function* weighted(quantiles: readonly number[], requests: number): Generator<number> {
  const weight = requests / quantiles.length;
  let carried = 0;
  for (const value of quantiles) {
    carried += weight;
    for (; carried >= 1; carried--) yield value;
  }
}

/** One request template whose Cookie header rotates over a cookie set (see SliceParams.rotate). */
function rotatingRequests(params: SliceParams): autocannon.Request[] {
  const { sessions, cookieName } = params.rotate!;
  const cookies = cookieSetOf(params.rotate!);
  const prefix = `${cookieName}=`;
  const path = new URL(params.url).pathname;
  let next = 0;
  const adopt = (value: string, index: number) => {
    if (!value.startsWith(prefix)) return;
    const end = value.indexOf(';');
    const pair = end === -1 ? value : value.slice(0, end);
    if (pair.length > prefix.length && cookies[index] !== pair) {
      cookies[index] = pair;
      cookiesChanged(cookies);
    }
  };
  return [
    {
      method: 'GET',
      path,
      setupRequest: (request: autocannon.Request, context: Record<string, unknown>) => {
        const index = next;
        next = next + 1 === sessions ? 0 : next + 1;
        context.index = index;
        return { ...request, headers: { ...params.headers, cookie: cookies[index]! } };
      },
      onResponse: (_status: number, _body: string, context: Record<string, unknown>, headers?: Record<string, string | string[]>) => {
        const setCookie = headers?.['set-cookie'] ?? headers?.['Set-Cookie'];
        if (!setCookie || typeof context.index !== 'number') return;
        for (const value of Array.isArray(setCookie) ? setCookie : [setCookie]) adopt(value, context.index);
      },
    } as unknown as autocannon.Request,
  ];
}

/** One timed slice by wrk: its 1,000 latency quantiles stand for its requests in the pool. */
async function runWrkSlice(params: SliceParams): Promise<Record<string, unknown>> {
  const { sessions, cookieName } = params.rotate!;
  const cookies = cookieSetOf(params.rotate!);
  const result = await wrkSlice({ url: params.url, headers: params.headers, connections: params.connections, durationSeconds: params.durationSeconds, cookies, sessions, cookieName });
  for (const [index, pair] of result.taken) cookies[index] = pair;
  if (result.taken.size > 0) cookiesChanged(cookies);
  const q = result.quantilesMs;
  const slice = { rps: result.requests / result.seconds, p50: q[499]!, p99: q[989]! };
  record(params, slice, result, weighted(q, result.requests));
  return { ...slice, requests: result.requests, seconds: result.seconds, non2xx: result.non2xx, errors: result.errors, cookiesTaken: result.taken.size };
}

function runSlice(params: SliceParams): Promise<Record<string, unknown>> {
  if (params.generator === 'wrk' && params.rotate && !params.amount && !params.overallRate) return runWrkSlice(params);
  return new Promise((resolve, reject) => {
    const local: number[] = [];
    let non2xxSeen = 0;
    const jar = params.sessionCookie && !params.rotate ? new SessionCookieJar(params.sessionCookie, params.headers) : undefined;
    const instance = autocannon(
      {
        url: params.url,
        headers: params.headers,
        ...(params.rotate ? { requests: rotatingRequests(params) } : {}),
        connections: params.connections,
        pipelining: 1,
        ...(params.amount ? { amount: params.amount } : { duration: params.durationSeconds }),
        timeout: 10,
        ...(params.overallRate ? { overallRate: params.overallRate } : {}),
        ...(jar ? { setupClient: jar.attach as unknown as (client: autocannon.Client) => void } : {}),
      },
      (err, result) => {
        if (err) {
          reject(err);
          return;
        }
        const seconds = result.duration;
        const completed = result.requests.total;
        const sorted = Float64Array.from(local).sort();
        const slice = { rps: completed / seconds, p50: percentile(sorted, 0.5), p99: percentile(sorted, 0.99) };
        record(params, slice, { requests: completed, seconds, non2xx: result.non2xx, errors: result.errors }, local);
        resolve({ ...slice, requests: completed, seconds, non2xx: result.non2xx, errors: result.errors, non2xxSeen, ...(jar ? { cookie: jar.cookie } : {}) });
      },
    );
    instance.on('response', (_client: unknown, statusCode: number, _bytes: number, responseTime: number) => {
      if (statusCode >= 200 && statusCode < 300) local.push(responseTime);
      else non2xxSeen++;
    });
  });
}

function summary(target: string) {
  const p = pools.get(target);
  if (!p) return null;
  const sorted = p.latencies.slice(0, p.count).sort();
  const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] ?? NaN;
  return {
    requests: p.requests,
    seconds: p.seconds,
    rps: p.requests / p.seconds,
    p50: percentile(sorted, 0.5),
    p90: percentile(sorted, 0.9),
    p99: percentile(sorted, 0.99),
    max: sorted[sorted.length - 1] ?? NaN,
    non2xx: p.non2xx,
    errors: p.errors,
    slices: p.slices,
    sliceRpsMedian: median(p.slices.map((s) => s.rps)),
    sliceP99Median: median(p.slices.map((s) => s.p99)),
  };
}

interface BurstRequest {
  url: string;
  method?: string;
  headers: Record<string, string>;
}

interface BurstResult {
  statuses: Record<string, number>;
  latencies: number[];
  totalMs: number;
  /** One per request that got no response (socket error, timeout). */
  errors: string[];
  /** Per request, the status (0 = no response), in request order. */
  perRequest: number[];
  /** One response body per failing status. */
  failureSamples: Record<string, string>;
}

const agents = new Map<string, Agent>();

function agentFor(origin: string): Agent {
  let agent = agents.get(origin);
  if (!agent) {
    agent = new Agent({ keepAlive: true, maxSockets: Infinity, maxFreeSockets: 10_000, keepAliveMsecs: 30_000 });
    agents.set(origin, agent);
  }
  return agent;
}

function send(req: BurstRequest): Promise<{ status: number; ms: number; error?: string; body?: string }> {
  const url = new URL(req.url);
  const started = process.hrtime.bigint();
  return new Promise((resolve) => {
    const outgoing = request(
      url,
      { method: req.method ?? 'GET', headers: req.headers, agent: agentFor(url.origin), timeout: 30_000 },
      (res) => {
        const status = res.statusCode ?? 0;
        // Keep the body of failures (browser-facing error JSON) to say what went wrong.
        let body = '';
        if (status === 200) res.resume();
        else res.on('data', (chunk: Buffer) => (body += chunk.toString('utf8').slice(0, 300)));
        res.on('end', () => resolve({ status, ms: Number(process.hrtime.bigint() - started) / 1e6, ...(status === 200 ? {} : { body: body.slice(0, 300) }) }));
        res.on('error', (err) => resolve({ status: 0, ms: Number(process.hrtime.bigint() - started) / 1e6, error: err.message }));
      },
    );
    outgoing.on('timeout', () => outgoing.destroy(new Error('timeout')));
    outgoing.on('error', (err) => resolve({ status: 0, ms: Number(process.hrtime.bigint() - started) / 1e6, error: err.message }));
    outgoing.end();
  });
}

/** Opens `count` keep-alive connections to each origin (by requesting `path` that many times at once). */
async function prewarm(params: { origins: Record<string, number>; path: string }): Promise<void> {
  await Promise.all(
    Object.entries(params.origins).flatMap(([origin, count]) =>
      Array.from({ length: count }, () => send({ url: `${origin}${params.path}`, headers: {} })),
    ),
  );
}

async function burst(params: { requests: BurstRequest[] }): Promise<BurstResult> {
  const started = process.hrtime.bigint();
  const results = await Promise.all(params.requests.map((r) => send(r)));
  const totalMs = Number(process.hrtime.bigint() - started) / 1e6;
  const statuses: Record<string, number> = {};
  for (const r of results) statuses[String(r.status)] = (statuses[String(r.status)] ?? 0) + 1;
  return {
    statuses,
    latencies: results.map((r) => r.ms),
    totalMs,
    errors: results.filter((r) => r.error).map((r) => r.error!),
    perRequest: results.map((r) => r.status),
    failureSamples: Object.fromEntries(results.filter((r) => r.status !== 200).map((r) => [String(r.status), r.body ?? r.error ?? ''])),
  };
}

serve({
  slice: runSlice,
  setCookies(params: { set: string; cookies: string[] }) {
    cookieSets.set(params.set, params.cookies);
    return { count: params.cookies.length };
  },
  /** The set's first cookie now (it may have been replaced by a Set-Cookie). */
  cookieOf(params: { set: string; index: number }) {
    return cookieSets.get(params.set)?.[params.index] ?? null;
  },
  summary: (params: { target: string }) => summary(params.target),
  prewarm,
  burst,
  closeAgents() {
    for (const agent of agents.values()) agent.destroy();
    agents.clear();
  },
});
