/**
 * The production-like phase of `npm run bench` (issue 28): token-handler measured the way
 * users load it, beside the peers they would pick instead.
 *
 * - A provider of its own (child process) whose ID tokens carry the claims a real provider
 *   sends (bench/lib/claims.ts): the sealed cookie-store cookie is ~3.2 KB.
 * - Two upstreams: one that does no work (a fixed 200 JSON, keep-alive: the proxies' own
 *   cost shows) and the test harness's introspecting one (every token checked, cached).
 * - Targets: the upstream directly; nginx as a bare proxy (the C floor) and Apache httpd
 *   with mod_auth_openidc (the BFF peer), both from Debian's packages (bench/lib/peers.ts);
 *   the bare @fastify/http-proxy; token-handler per store with 1, 1,000 and 10,000 distinct
 *   sessions (synthetic sessions seeded into the running instance, bench/lib/th-child.ts
 *   `seedSessions`; the load generator sends the next session's cookie on every request and
 *   keeps a cookie a response sets for that session); token-handler with OTEL tracing on.
 * - Three measurements, each alternating its targets round-robin in 2-s slices (order
 *   rotated every round), each warmed up right before it: cheap upstream at 50 connections
 *   (every target, 3 rounds), cheap upstream at 16 connections and introspecting upstream
 *   at 50 connections (1 session, 2 rounds).
 * - Reported per target: req/s, p50/p99, ratios to the bare proxy, nginx, mod_auth_openidc
 *   and the upstream directly, added p99 over the bare proxy, CPU µs per request of the
 *   proxy's processes, RSS; the issue's targets as PASS/FAIL lines.
 *
 * Knobs: BENCH_SKIP=production skips it; BENCH_PRODUCTION_ROUNDS (3), BENCH_PRODUCTION_SIDE_ROUNDS (2),
 * BENCH_PRODUCTION_WARMUP_SECONDS (2), BENCH_PRODUCTION_SESSIONS ("1,1000,10000"),
 * BENCH_SLICE_SECONDS (2), BENCH_NO_INSTALL=1 (never apt-get the peers).
 */
import { loadavg } from 'node:os';
import type { Child, SpawnOptions } from './lib/rpc.js';
import { realisticClaims } from './lib/claims.js';
import { ensurePeers, procCpuUs, procRss, startApacheOidc, startNginx, type RunningPeer } from './lib/peers.js';
import { REDIRECT_URI, SECRET, SESSION_COOKIE, type ProviderInfo, type Store } from './lib/stack.js';
import { bytes, fmt, markdownTable, round, table } from './lib/stats.js';
import { Sealer } from '../src/state/sealer.js';
import type { SessionRecord } from '../src/state/record.js';

export interface ProductionContext {
  load: Child;
  /** Forks a bench child (bench/lib/…) that the caller stops at the end whatever happens. */
  spawn(file: string, options?: SpawnOptions): Child;
  progress(message: string): void;
  loud(message: string): void;
  redisUp: boolean;
  redisPrefix: string;
  stores: Store[];
  accessTokenTtlSeconds: number;
}

const env = process.env;
const num = (name: string, fallback: number) => (env[name] ? Number(env[name]) : fallback);

export const productionSettings = {
  rounds: num('BENCH_PRODUCTION_ROUNDS', 3),
  /** The two side measurements (16 connections; the introspecting upstream): fewer rounds keep the run short. */
  sideRounds: num('BENCH_PRODUCTION_SIDE_ROUNDS', 2),
  sliceSeconds: num('BENCH_SLICE_SECONDS', 2),
  warmupSeconds: num('BENCH_PRODUCTION_WARMUP_SECONDS', 2),
  sessionCounts: (env.BENCH_PRODUCTION_SESSIONS ?? '1,1000,10000').split(',').map(Number),
  mainConnections: 50,
  otherConnections: 16,
  /**
   * The store of the capabilities measurement: its process serves one route per capability
   * beside the plain one, and a second process of it has tracing on. The memory store, so
   * that a per-API token (~1.2 KB more sealed) does not split the cookie into chunks.
   */
  tracedStore: 'memory' as Store,
};

const MOD_AUTH_OPENIDC_COOKIE = 'mod_auth_openidc_session';
const PREFIX_CHEAP = '/api';
const PREFIX_INTROSPECTING = '/japi';

type Kind = 'direct' | 'nginx' | 'bare-proxy' | 'mod_auth_openidc' | 'th';

interface Target {
  name: string;
  kind: Kind;
  store?: Store;
  sessions: number;
  tracing?: boolean;
  url: string;
  headers: Record<string, string>;
  rotate: { set: string; sessions: number; cookieName: string };
  /** CPU time of the proxy's processes during a slice, µs (undefined: not measured). */
  cpu?: { start(): Promise<void>; stop(): Promise<number> };
  /** RSS of the proxy's processes, bytes. */
  rss?: () => Promise<number>;
}

interface Row {
  target: string;
  kind: Kind;
  store?: Store;
  sessions: number;
  tracing?: boolean;
  rps: number;
  p50Ms: number;
  p99Ms: number;
  requests: number;
  non2xx: number;
  errors: number;
  vsBareProxy?: number;
  vsNginx?: number;
  vsModAuthOpenidc?: number;
  vsDirect?: number;
  addedP99MsOverBare?: number;
  /** Median over rounds of the round's ratio to the bare proxy (neighbouring slices). */
  vsBareProxyRoundMedian?: number;
  cpuUsPerRequest?: number;
  rssBytes?: number;
  sliceRps: number[];
}

const short = (n: number) => (n >= 1000 ? `${n / 1000}k` : String(n));

export async function productionPhase(ctx: ProductionContext): Promise<Record<string, unknown>> {
  const { load, progress, loud } = ctx;
  const settings = productionSettings;
  const out: Record<string, unknown> = { settings };
  const stopList: Array<() => Promise<void>> = [];

  // --- peers ---
  const peers = ensurePeers(progress);
  out.peers = { nginx: peers.nginx, modAuthOpenidc: peers.apache, notes: peers.notes };
  out.loadGenerator = peers.wrk ? 'wrk (1 thread, bench/lib/wrk-sessions.lua)' : 'autocannon (wrk missing)';
  for (const note of peers.notes) if (/SKIPPED|failed|missing/.test(note)) loud(`production: ${note}`);
  const generator = peers.wrk ? ('wrk' as const) : ('autocannon' as const);

  try {
    // --- provider with realistic claims, upstreams, OTLP sink ---
    progress('production: starting a provider with realistic ID-token claims, an introspecting upstream, a no-work upstream and an OTLP sink');
    const providerChild = ctx.spawn('./provider-child.ts');
    const provider = await providerChild.call<ProviderInfo>('start', {
      redirectUris: [REDIRECT_URI], accessTokenTtlSeconds: ctx.accessTokenTtlSeconds, extraClaims: realisticClaims,
      resourceServers: { [CAPABILITY_RESOURCE]: { audience: 'bench-orders', scope: 'orders:read' } },
    });
    stopList.push(() => providerChild.call('stop').then(() => undefined));
    const introspectingChild = ctx.spawn('./upstream-child.ts');
    const introspecting = await introspectingChild.call<{ url: string }>('start', {
      introspectionEndpoint: provider.endpoints.introspection, clientId: provider.clients.api.clientId, clientSecret: provider.clients.api.clientSecret,
    });
    const otlp = await introspectingChild.call<{ url: string }>('startOtlpSink');
    stopList.push(() => introspectingChild.call('stop').then(() => undefined));
    const cheapChild = ctx.spawn('./upstream-child.ts');
    const cheap = await cheapChild.call<{ url: string }>('startCheap');
    stopList.push(() => cheapChild.call('stop').then(() => undefined));
    const routes = [
      { prefix: PREFIX_CHEAP, upstream: cheap.url },
      { prefix: PREFIX_INTROSPECTING, upstream: introspecting.url },
    ];

    // --- token-handler per store (and one with tracing on), each logged in once for real ---
    const maxSessions = Math.max(...settings.sessionCounts);
    /** `store`: a target of every measurement, seeded with sessions; the other two serve the capabilities measurement only. */
    type Role = 'store' | 'capabilities' | 'tracing';
    const thChildren = new Map<string, { child: Child; url: string; loginCookie: string; store: Store; role: Role }>();
    const thSpecs: Array<{ key: string; store: Store; role: Role }> = [
      ...ctx.stores.map((store) => ({ key: `th-${store}`, store, role: 'store' as const })),
      { key: CAPABILITIES_KEY, store: settings.tracedStore, role: 'capabilities' },
      { key: `th-${settings.tracedStore}+tracing`, store: settings.tracedStore, role: 'tracing' },
    ];
    await Promise.all(
      thSpecs.map(async ({ key, store, role }) => {
        const child = ctx.spawn('./th-child.ts', role === 'tracing' ? { env: { OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: `${otlp.url}/v1/traces`, OTEL_SERVICE_NAME: 'token-handler-bench' } } : {});
        const { url, cookie } = await child.call<{ url: string; cookie: string }>('startTokenHandler', {
          provider, upstreamUrl: cheap.url, store, redisPrefix: `${ctx.redisPrefix}prod:${key}:`, userName: `jane.doe.${key}`,
          extra:
            role === 'capabilities'
              ? {
                  routes: [...routes, ...capabilityRoutes(cheap.url)],
                  // DPoP-bound tokens: the dpop route sends a proof per request, the others the same token as Bearer.
                  oidc: { issuer: provider.issuer, clientId: provider.clients.basic.clientId, clientSecret: provider.clients.basic.clientSecret, dpop: true },
                }
              : { routes },
        });
        stopList.push(() => child.call('stop').then(() => undefined));
        thChildren.set(key, { child, url, loginCookie: cookie, store, role });
      }),
    );
    const sealer = new Sealer([SECRET]);
    const cookieLogin = thChildren.get('th-cookie')!.loginCookie;
    const template = await sealer.unseal<SessionRecord>(cookieLogin.slice(SESSION_COOKIE.length + 1));
    if (!template) throw new Error('production: could not unseal the cookie-store login');

    // --- synthetic sessions ---
    const seeded: Record<string, { sessions: number; seconds: number; avgCookieBytes: number }> = {};
    for (const [key, th] of thChildren) {
      const count = th.role === 'store' ? maxSessions : 1;
      const startedAt = Date.now();
      const { cookies } = await th.child.call<{ cookies: string[] }>('seedSessions', { count, template });
      await load.call('setCookies', { set: key, cookies });
      await load.call('setCookies', { set: `${key}-login`, cookies: [th.loginCookie] });
      const avg = cookies.reduce((sum, c) => sum + c.length - SESSION_COOKIE.length - 1, 0) / cookies.length;
      seeded[key] = { sessions: count, seconds: round((Date.now() - startedAt) / 1000, 1), avgCookieBytes: Math.round(avg) };
      if (key === 'th-cookie') await load.call('setCookies', { set: 'bare', cookies: [cookies[0]!] });
    }
    progress(`production: seeded ${Object.entries(seeded).map(([k, v]) => `${k} ${v.sessions} (${v.seconds} s)`).join(', ')}`);

    // --- peers ---
    const bareChild = ctx.spawn('./th-child.ts');
    const bare = await bareChild.call<{ url: string }>('startBareProxy', { upstreamUrl: cheap.url, bearer: template.accessToken, moreRoutes: [{ prefix: PREFIX_INTROSPECTING, upstream: introspecting.url }] });
    stopList.push(() => bareChild.call('stop').then(() => undefined));
    let nginx: RunningPeer | undefined;
    if (peers.nginx) {
      try {
        nginx = await startNginx(routes, template.accessToken);
        stopList.push(() => nginx!.stop());
      } catch (err) {
        loud(`production: nginx did not start, SKIPPED: ${(err as Error).message.slice(0, 400)}`);
      }
    }
    let apache: RunningPeer | undefined;
    let apacheCookie: string | undefined;
    if (peers.apache) {
      try {
        const started = await startApacheOidc({
          discoveryUrl: `${provider.issuer}/.well-known/openid-configuration`,
          routes,
          registerClient: (metadata) => providerChild.call('addClient', { metadata }),
        });
        apache = started.peer;
        stopList.push(() => started.peer.stop());
        apacheCookie = await started.login('jane.doe.apache');
        await load.call('setCookies', { set: 'mod_auth_openidc', cookies: [apacheCookie] });
      } catch (err) {
        loud(`production: Apache with mod_auth_openidc did not start or log in, SKIPPED: ${(err as Error).message.slice(0, 600)}`);
        await apache?.stop();
        apache = undefined;
      }
    }
    await load.call('setCookies', { set: 'direct', cookies: ['x=1'] });

    // Cookie sizes, as browsers send them.
    const cookieSizes = {
      cookieStoreLogin: cookieLogin.length - SESSION_COOKIE.length - 1,
      cookieStoreSynthetic: seeded['th-cookie']?.avgCookieBytes,
      memoryStorePointer: seeded['th-memory']?.avgCookieBytes,
      ...(seeded['th-redis'] ? { redisStorePointer: seeded['th-redis'].avgCookieBytes } : {}),
      ...(apacheCookie ? { modAuthOpenidc: apacheCookie.length - MOD_AUTH_OPENIDC_COOKIE.length - 1 } : {}),
      idTokenChars: template.idToken?.length ?? 0,
      claimsJsonBytes: Buffer.byteLength(JSON.stringify(template.claims)),
      recordJsonBytes: Buffer.byteLength(JSON.stringify(template)),
    };
    out.cookieSizes = cookieSizes;
    progress(
      `production: session cookie sizes: cookie store ${cookieSizes.cookieStoreLogin} B sealed (real login; synthetic sessions ${cookieSizes.cookieStoreSynthetic} B; ` +
        `record ${cookieSizes.recordJsonBytes} B JSON, ID token ${cookieSizes.idTokenChars} chars, claims ${cookieSizes.claimsJsonBytes} B), memory/redis pointer ${cookieSizes.memoryStorePointer} B` +
        `${apacheCookie ? `, mod_auth_openidc ${cookieSizes.modAuthOpenidc} B (server-side session)` : ''}`,
    );

    // --- targets ---
    const spa = { 'x-csrf': '1', accept: 'application/json' };
    const childCpu = (child: Child) => ({
      start: () => child.call('cpuStart').then(() => undefined),
      stop: async () => {
        const cpu = await child.call<{ userMs: number; systemMs: number }>('cpuStop');
        return (cpu.userMs + cpu.systemMs) * 1000;
      },
    });
    const peerCpu = (peer: RunningPeer) => {
      let pids: number[] = [];
      let before = 0;
      return {
        start: async () => {
          pids = peer.pids();
          before = procCpuUs(pids);
        },
        stop: async () => procCpuUs(pids) - before,
      };
    };
    const childRss = (child: Child) => async () => (await child.call<{ rss: number }>('memory')).rss;
    const peerRss = (peer: RunningPeer) => async () => procRss(peer.pids());

    const targetsFor = (prefix: string, upstreamUrl: string, sessionCounts: number[]): Target[] => {
      const login = prefix === PREFIX_INTROSPECTING; // real tokens: the introspecting upstream checks them
      const targets: Target[] = [
        {
          name: 'direct', kind: 'direct', sessions: 1, url: `${upstreamUrl}/items`,
          headers: { authorization: `Bearer ${template.accessToken}`, accept: 'application/json' },
          rotate: { set: 'direct', sessions: 1, cookieName: 'x' },
        },
      ];
      if (nginx) targets.push({ name: 'nginx', kind: 'nginx', sessions: 1, url: `${nginx.url}${prefix}/items`, headers: spa, rotate: { set: 'bare', sessions: 1, cookieName: SESSION_COOKIE }, cpu: peerCpu(nginx), rss: peerRss(nginx) });
      targets.push({ name: 'bare-proxy', kind: 'bare-proxy', sessions: 1, url: `${bare.url}${prefix}/items`, headers: spa, rotate: { set: 'bare', sessions: 1, cookieName: SESSION_COOKIE }, cpu: childCpu(bareChild), rss: childRss(bareChild) });
      if (apache) {
        targets.push({ name: 'mod_auth_openidc', kind: 'mod_auth_openidc', sessions: 1, url: `${apache.url}${prefix}/items`, headers: spa, rotate: { set: 'mod_auth_openidc', sessions: 1, cookieName: MOD_AUTH_OPENIDC_COOKIE }, cpu: peerCpu(apache), rss: peerRss(apache) });
      }
      for (const [key, th] of thChildren) {
        if (th.role !== 'store') continue;
        for (const sessions of sessionCounts) {
          targets.push({
            name: `${key}@${short(sessions)}`, kind: 'th', store: th.store, sessions,
            url: `${th.url}${prefix}/items`, headers: spa,
            rotate: { set: login ? `${key}-login` : key, sessions, cookieName: SESSION_COOKIE },
            cpu: childCpu(th.child), rss: childRss(th.child),
          });
        }
      }
      return targets;
    };

    /**
     * Each capability against the plain route of the same process and session (a real login:
     * the per-API token route needs the resource token the login obtained), and tracing on (a
     * process of the same store and configuration but for those routes) against that plain route.
     */
    const capabilityTargets = (): Target[] => {
      const targets: Target[] = [];
      const add = (name: string, key: string, prefix: string, extra: Partial<Target> = {}) => {
        const th = thChildren.get(key);
        if (!th) return;
        targets.push({
          name, kind: 'th', store: th.store, sessions: 1, url: `${th.url}${prefix}/items`, headers: spa,
          rotate: { set: `${key}-login`, sessions: 1, cookieName: SESSION_COOKIE }, cpu: childCpu(th.child), ...extra,
        });
      };
      add(CAPABILITY_PLAIN, CAPABILITIES_KEY, PREFIX_CHEAP);
      for (const capability of CAPABILITIES) add(capability.name, CAPABILITIES_KEY, capability.prefix);
      add('tracing', `th-${settings.tracedStore}+tracing`, PREFIX_CHEAP, { tracing: true });
      return targets;
    };

    const measurements: Measurement[] = [
      { id: 'cheap-50', title: `no-work upstream, ${settings.mainConnections} connections`, connections: settings.mainConnections, rounds: settings.rounds, targets: targetsFor(PREFIX_CHEAP, cheap.url, settings.sessionCounts) },
      { id: 'cheap-16', title: `no-work upstream, ${settings.otherConnections} connections, 1 session`, connections: settings.otherConnections, rounds: settings.sideRounds, targets: targetsFor(PREFIX_CHEAP, cheap.url, [1]) },
      { id: 'introspecting-50', title: `introspecting upstream, ${settings.mainConnections} connections, 1 session (real login)`, connections: settings.mainConnections, rounds: settings.sideRounds, targets: targetsFor(PREFIX_INTROSPECTING, introspecting.url, [1]) },
      { id: 'capabilities-50', title: `capabilities: each route against the plain one, ${settings.tracedStore} store, no-work upstream, ${settings.mainConnections} connections, 1 session (real login)`, connections: settings.mainConnections, rounds: settings.sideRounds, targets: capabilityTargets() },
    ];

    for (const m of measurements) m.generator = generator;
    const results: Record<string, Row[]> = {};
    for (const m of measurements) {
      await warmUp(ctx, m);
      results[m.id] = await measure(ctx, m);
    }
    out.measurements = Object.fromEntries(measurements.map((m) => [m.id, { title: m.title, connections: m.connections, rows: results[m.id] }]));
    out.otlpSink = await introspectingChild.call('otlpStats');

    // Memory after the run.
    const rssRows: Record<string, number> = {};
    for (const target of measurements[0]!.targets) {
      const key = target.kind === 'th' ? target.name.replace(/@.*$/, '') : target.name;
      if (target.rss && rssRows[key] === undefined) rssRows[key] = await target.rss();
    }
    out.rssAfter = rssRows;
    progress(`production: RSS after the run: ${Object.entries(rssRows).map(([k, v]) => `${k} ${bytes(v)}`).join(', ')} (th-* hold ${maxSessions} seeded sessions each)`);

    const main = results['cheap-50']!;
    out.capabilities = capabilityCosts(results['capabilities-50']!);

    out.verdicts = verdicts(main, ctx.stores, settings.sessionCounts);
    return out;
  } finally {
    for (const stop of stopList.reverse()) await stop().catch(() => undefined);
  }
}

/** The resource (RFC 8707) of the per-API token route: the bench provider issues its own token for it. */
const CAPABILITY_RESOURCE = 'https://orders.bench.example';
const CAPABILITY_PLAIN = 'plain route';
/** The token-handler child that serves the capability routes (its login asks for the per-API token's resource too). */
const CAPABILITIES_KEY = 'th-capabilities';
/** One route per capability, each to the no-work upstream, beside the plain /api route. */
const CAPABILITIES = [
  { name: 'route policy', prefix: '/papi', route: { require: { claims: { groups: ['/all-staff'] } } }, what: 'require: claims (groups), checked per request' },
  { name: 'identity headers', prefix: '/iapi', route: { identityHeaders: { 'X-User-Sub': 'sub', 'X-User-Email': 'email', 'X-User-Groups': 'groups' } }, what: 'three claims to the upstream' },
  { name: 'per-API token', prefix: '/rapi', route: { resource: CAPABILITY_RESOURCE }, what: 'resource: its own access token (RFC 8707), from the session' },
  { name: 'DPoP', prefix: '/dapi', route: { dpop: true }, what: 'Authorization: DPoP and a proof signed per request (ES256, the session key)' },
] as const;

function capabilityRoutes(upstream: string): Array<Record<string, unknown>> {
  return CAPABILITIES.map(({ prefix, route }) => ({ prefix, upstream, ...route }));
}

/** Each capability's rate, CPU and p99 against the plain route of the same measurement. */
function capabilityCosts(rows: Row[]): Record<string, unknown> {
  const plain = rows.find((r) => r.target === CAPABILITY_PLAIN);
  const out: Record<string, unknown> = {};
  if (!plain) return out;
  const lines: string[] = [];
  for (const row of rows) {
    if (row === plain) continue;
    const what = row.tracing ? 'OTLP/HTTP to a local sink, another process of the same store' : CAPABILITIES.find((c) => c.name === row.target)?.what;
    const addedCpu = row.cpuUsPerRequest !== undefined && plain.cpuUsPerRequest !== undefined ? row.cpuUsPerRequest - plain.cpuUsPerRequest : undefined;
    out[row.target] = { what, rps: row.rps, ratio: round(row.rps / plain.rps, 3), cpuUsPerRequest: row.cpuUsPerRequest, addedCpuUsPerRequest: addedCpu, p99Ms: row.p99Ms, addedP99Ms: round(row.p99Ms - plain.p99Ms, 3), non2xx: row.non2xx };
    lines.push(
      `  ${row.target.padEnd(17)} ${fmt(row.rps / plain.rps, 2)} × the plain route, ${addedCpu === undefined ? '-' : `${addedCpu >= 0 ? '+' : ''}${addedCpu}`} µs CPU/req, ` +
        `p99 ${fmt(row.p99Ms - plain.p99Ms, 2)} ms added${row.non2xx ? `, ${row.non2xx} non-2xx (NOT MEASURED RIGHT)` : ''} — ${what}`,
    );
  }
  console.log(`\nCapabilities (plain route ${plain.rps} req/s, ${plain.cpuUsPerRequest ?? '-'} µs CPU/req):\n${lines.join('\n')}`);
  out.plain = { rps: plain.rps, cpuUsPerRequest: plain.cpuUsPerRequest, p99Ms: plain.p99Ms };
  return out;
}

interface Measurement {
  /** Timed slices' load generator (warm-ups that visit every session once are autocannon's). */
  generator?: 'wrk' | 'autocannon';
  id: string;
  title: string;
  connections: number;
  rounds: number;
  targets: Target[];
}

/**
 * Right before a measurement (so that no other measurement's cookies sit in the caches
 * meanwhile): every target under load for the warm-up time (V8's tiers, connection
 * pools), and a target of N sessions first sends N requests, so every session has been
 * seen once — as in a process that has served its users for a while — rather than
 * measuring N first visits (each one an iron unseal; the profile of a cold 9,000-session
 * run spent 41 % of its CPU there).
 */
async function warmUp(ctx: ProductionContext, m: Measurement): Promise<void> {
  const settings = productionSettings;
  ctx.progress(`production ${m.id}: warm-up, ${settings.warmupSeconds} s per target (and one request per session first)`);
  for (const target of m.targets) {
    const base = { target: `warm:${m.id}:${target.name}`, url: target.url, headers: target.headers, connections: m.connections, warmup: true, rotate: target.rotate };
    const runs = [
      ...(target.sessions > 1 ? [{ ...base, durationSeconds: 0, amount: target.sessions }] : []),
      { ...base, durationSeconds: m.id === 'cheap-50' || target.kind === 'th' ? settings.warmupSeconds : 1, generator: m.generator },
    ];
    for (const run of runs) {
      const warm = await ctx.load.call<{ non2xx: number; errors: number }>('slice', run);
      if (warm.non2xx > 0 || warm.errors > 0) ctx.loud(`production ${m.id}: ${target.name} warm-up saw ${warm.non2xx} non-2xx and ${warm.errors} errors`);
    }
  }
}

async function measure(ctx: ProductionContext, m: Measurement): Promise<Row[]> {
  const { load, progress } = ctx;
  const settings = { ...productionSettings, rounds: m.rounds };
  progress(`production ${m.id}: ${m.targets.length} targets × ${settings.rounds} rounds × ${settings.sliceSeconds} s, ${m.connections} connections`);
  const cpu: Record<string, { us: number; requests: number }> = {};
  const rounds: Array<Record<string, number>> = [];
  for (let r = 0; r < settings.rounds; r++) {
    const order = m.targets.map((_, i) => m.targets[(i + r) % m.targets.length]!);
    const roundRps: Record<string, number> = {};
    for (const target of order) {
      await target.cpu?.start();
      const slice = await load.call<{ rps: number; requests: number; non2xx: number; errors: number }>('slice', {
        target: `prod:${m.id}:${target.name}`, url: target.url, headers: target.headers, connections: m.connections,
        durationSeconds: settings.sliceSeconds, rotate: target.rotate, generator: m.generator,
      });
      if (target.cpu) {
        const us = await target.cpu.stop();
        const total = (cpu[target.name] ??= { us: 0, requests: 0 });
        total.us += us;
        total.requests += slice.requests;
      }
      roundRps[target.name] = slice.rps;
    }
    rounds.push(roundRps);
    progress(`production ${m.id} round ${r + 1}/${settings.rounds}: ${m.targets.map((t) => `${t.name} ${Math.round(roundRps[t.name]!)}`).join(', ')} (load ${loadavg()[0]!.toFixed(1)})`);
  }
  type Summary = { rps: number; p50: number; p99: number; requests: number; non2xx: number; errors: number; slices: Array<{ rps: number }> };
  const summaries: Record<string, Summary> = {};
  for (const target of m.targets) summaries[target.name] = (await load.call<Summary>('summary', { target: `prod:${m.id}:${target.name}` }))!;
  const of = (name: string) => summaries[name];
  const median = (values: number[]) => {
    const sorted = [...values].sort((a, b) => a - b);
    const mid = Math.floor(sorted.length / 2);
    return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
  };
  const rows: Row[] = m.targets.map((target) => {
    const s = summaries[target.name]!;
    const ratio = (name: string) => (of(name) && name !== target.name ? round(s.rps / of(name)!.rps, 3) : undefined);
    const c = cpu[target.name];
    const row: Row = {
      target: target.name, kind: target.kind, ...(target.store ? { store: target.store } : {}), sessions: target.sessions, ...(target.tracing ? { tracing: true } : {}),
      rps: round(s.rps, 0), p50Ms: round(s.p50, 3), p99Ms: round(s.p99, 3), requests: s.requests, non2xx: s.non2xx, errors: s.errors,
      sliceRps: s.slices.map((x) => round(x.rps, 0)),
    };
    const vsBare = ratio('bare-proxy');
    if (vsBare !== undefined) row.vsBareProxy = vsBare;
    const vsNginx = ratio('nginx');
    if (vsNginx !== undefined) row.vsNginx = vsNginx;
    const vsApache = ratio('mod_auth_openidc');
    if (vsApache !== undefined) row.vsModAuthOpenidc = vsApache;
    const vsDirect = ratio('direct');
    if (vsDirect !== undefined) row.vsDirect = vsDirect;
    if (target.kind !== 'direct' && target.name !== 'bare-proxy' && of('bare-proxy')) {
      row.addedP99MsOverBare = round(s.p99 - of('bare-proxy')!.p99, 3);
      row.vsBareProxyRoundMedian = round(median(rounds.map((x) => x[target.name]! / x['bare-proxy']!)), 3);
    }
    if (c && c.requests > 0) row.cpuUsPerRequest = Math.round(c.us / c.requests);
    return row;
  });
  console.log(`\nProduction-like: ${m.title} (${settings.rounds} × ${settings.sliceSeconds} s per target, pooled)\n`);
  console.log(
    table(
      ['target', 'req/s', 'p50 ms', 'p99 ms', 'vs bare', 'vs nginx', 'vs m_a_o', 'vs direct', '+p99 ms', 'rounds vs bare', 'CPU µs/req', 'non-2xx', 'slices req/s'],
      rows.map((r) => [
        r.target, String(r.rps), fmt(r.p50Ms, 2), fmt(r.p99Ms, 2), fmt(r.vsBareProxy, 2), fmt(r.vsNginx, 2), fmt(r.vsModAuthOpenidc, 2), fmt(r.vsDirect, 2),
        fmt(r.addedP99MsOverBare, 2), fmt(r.vsBareProxyRoundMedian, 2), r.cpuUsPerRequest === undefined ? '' : String(r.cpuUsPerRequest),
        String(r.non2xx + r.errors), r.sliceRps.join(' '),
      ]),
    ),
  );
  for (const r of rows) if (r.non2xx + r.errors > 0) ctx.loud(`production ${m.id}: ${r.target}: ${r.non2xx} non-2xx and ${r.errors} errors during measurement`);
  return rows;
}

/** The issue's targets, on the no-work upstream at 50 connections. */
function verdicts(rows: Row[], stores: Store[], sessionCounts: number[]): string[] {
  const lines: string[] = [];
  const line = (ok: boolean | undefined, text: string) => lines.push(`${ok === undefined ? 'SKIP' : ok ? 'PASS' : 'FAIL'} ${text}`);
  const apache = rows.find((r) => r.kind === 'mod_auth_openidc');
  const maxSessions = Math.max(...sessionCounts);
  for (const store of stores) {
    const one = rows.find((r) => r.kind === 'th' && r.store === store && r.sessions === 1 && !r.tracing);
    if (!one) continue;
    line(one.vsBareProxy !== undefined ? one.vsBareProxy >= 1.0 : undefined, `th-${store} ≥ 1.0 × bare proxy (no-work upstream, 50 conns): ${fmt(one.vsBareProxy, 3)} (per-round median ${fmt(one.vsBareProxyRoundMedian, 2)})`);
    line(apache ? one.rps / apache.rps >= 1.5 : undefined, `th-${store} ≥ 1.5 × mod_auth_openidc: ${apache ? fmt(one.rps / apache.rps, 3) : 'mod_auth_openidc not run'}`);
    // Apache spreads over both cores, one Node process does not: the CPU each spends per request says more than req/s here.
    if (apache?.cpuUsPerRequest && one.cpuUsPerRequest) lines.push(`INFO th-${store} CPU per request vs mod_auth_openidc's: ${fmt(one.cpuUsPerRequest / apache.cpuUsPerRequest, 2)} (${one.cpuUsPerRequest} / ${apache.cpuUsPerRequest} µs)`);
    line(one.addedP99MsOverBare !== undefined ? one.addedP99MsOverBare <= 1 : undefined, `th-${store} added p99 over the bare proxy ≤ 1 ms: ${fmt(one.addedP99MsOverBare, 2)} ms`);
    const many = rows.find((r) => r.kind === 'th' && r.store === store && r.sessions === maxSessions && maxSessions > 1);
    if (many) {
      const ratio = many.rps / one.rps;
      const text = `th-${store} ${short(maxSessions)} sessions ≥ 0.9 × 1 session: ${fmt(ratio, 3)}`;
      if (store === 'cookie') lines.push(`INFO ${text} (no target for the cookie store)`);
      else line(ratio >= 0.9, text);
    }
  }
  console.log(`\nIssue 28 targets (no-work upstream, 50 connections):\n${lines.map((l) => `  ${l}`).join('\n')}`);
  return lines;
}

/** The side-by-side table of the main measurement, Markdown (latest.md, the README). */
export function productionMarkdown(production: Record<string, unknown>): string {
  const measurements = production.measurements as Record<string, { title: string; rows: Row[] }> | undefined;
  const main = measurements?.['cheap-50'];
  if (!main) return '';
  return `${markdownTable(
    ['target', 'req/s', 'p50 ms', 'p99 ms', 'vs bare proxy', 'vs nginx', 'vs mod_auth_openidc', 'vs direct', 'added p99 ms', 'CPU µs/req'],
    main.rows.map((r) => [
      r.target, String(r.rps), fmt(r.p50Ms, 2), fmt(r.p99Ms, 2), fmt(r.vsBareProxy, 2), fmt(r.vsNginx, 2), fmt(r.vsModAuthOpenidc, 2), fmt(r.vsDirect, 2),
      fmt(r.addedP99MsOverBare, 2), r.cpuUsPerRequest === undefined ? '' : String(r.cpuUsPerRequest),
    ]),
  )}\n\n${main.title}\n\n${((production.verdicts as string[] | undefined) ?? []).join('\n\n')}\n`;
}
