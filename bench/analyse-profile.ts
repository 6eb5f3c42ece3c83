/**
 * Aggregates a .cpuprofile (V8 CPU profile JSON, as written by --cpu-prof or the
 * inspector) by self time: top functions, and shares per area (sealing,
 * cookie parsing, Fastify, reply-from/undici, pino, ioredis, our src/, Node internals, GC).
 *
 *   npx tsx bench/analyse-profile.ts bench/results/<file>.cpuprofile [--top 15] [--json]
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  hitCount?: number;
  children?: number[];
}

export interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

export interface Analysis {
  totalMs: number;
  /** Sampled time outside "(idle)". */
  activeMs: number;
  top: Array<{ function: string; location: string; area: string; selfMs: number; share: number }>;
  areas: Array<{ area: string; selfMs: number; share: number }>;
  /**
   * Every sample charged to the nearest frame up its stack that belongs to a library or to
   * src/ (Node internals, native code and crypto primitives are charged to whoever called
   * them; what has no such caller, e.g. the HTTP parser, keeps its own area).
   */
  attributed: Array<{ area: string; ms: number; share: number }>;
  /** Inclusive time of a few entry points (a function and everything it calls). */
  inclusive: Array<{ name: string; ms: number; share: number }>;
}

/** Ordered: the first matching rule names the area. */
const AREAS: Array<[string, (frame: CallFrame) => boolean]> = [
  ['idle', (f) => f.functionName === '(idle)'],
  ['garbage collector', (f) => f.functionName === '(garbage collector)'],
  ['program (native, unattributed)', (f) => f.functionName === '(program)'],
  ['iron-session / iron-webcrypto (seal, unseal)', (f) => /node_modules\/(iron-session|iron-webcrypto|uncrypto)\//.test(f.url)],
  ['node crypto (webcrypto, hashes)', (f) => /node:internal\/crypto\//.test(f.url) || /^(internal\/crypto)/.test(f.url)],
  ['cookie parsing / serialising (@fastify/cookie, cookie)', (f) => /node_modules\/(@fastify\/cookie|cookie|cookie-signature)\//.test(f.url)],
  ['pino logging', (f) => /node_modules\/(pino|pino-std-serializers|sonic-boom|fast-redact|@pinojs\/redact|quick-format-unescaped|safe-stable-stringify|thread-stream|on-exit-leak-free|atomic-sleep)\//.test(f.url)],
  // undici parses HTTP responses with llhttp compiled to WebAssembly.
  ['reply-from / http-proxy / undici', (f) => f.url.startsWith('wasm://') || /node_modules\/(@fastify\/reply-from|@fastify\/http-proxy|undici|fast-content-type-parse|fast-querystring|end-of-stream|pump|toad-cache)\//.test(f.url)],
  ['fastify (routing, hooks, reply, plugins)', (f) => /node_modules\/(fastify|find-my-way|avvio|light-my-request|fast-json-stringify|@fastify\/[^/]+|abstract-logging|rfdc|process-warning|ret|safe-regex2|fast-decode-uri-component|json-schema-ref-resolver|secure-json-parse|content-type|proxy-addr|forwarded|ipaddr\.js|fastq|reusify|semver)\//.test(f.url)],
  ['ioredis', (f) => /node_modules\/(ioredis|redis-parser|redis-errors|denque|cluster-key-slot|standard-as-callback|lodash\.[a-z]+)\//.test(f.url)],
  ['openid-client / jose / oauth4webapi', (f) => /node_modules\/(openid-client|jose|oauth4webapi)\//.test(f.url)],
  ['token-handler src/ (dist/ when run compiled)', (f) => /\/(src|dist)\//.test(f.url) && !/node_modules/.test(f.url)],
  ['node http / net / streams', (f) => /node:(_http_|http|net|stream|internal\/(http|streams|stream_base|net|js_stream|webstreams|url|dns|tls|socket))/.test(f.url)],
  ['node internals (timers, events, promises, buffer, …)', (f) => f.url.startsWith('node:') || f.url === ''],
  ['other node_modules', (f) => /node_modules\//.test(f.url)],
];

export function areaOf(frame: CallFrame): string {
  for (const [name, test] of AREAS) if (test(frame)) return name;
  return 'other';
}

/** Areas that only do work on behalf of a caller: their time is charged to the nearest caller outside them. */
const SERVANT_AREAS = new Set([
  'node crypto (webcrypto, hashes)',
  'node http / net / streams',
  'node internals (timers, events, promises, buffer, …)',
  'other',
]);

function shortUrl(url: string): string {
  const nm = url.lastIndexOf('node_modules/');
  if (nm !== -1) return url.slice(nm + 'node_modules/'.length);
  const src = url.indexOf('/src/');
  if (src !== -1) return url.slice(src + 1);
  return url.replace(/^file:\/\//, '');
}

/** Self time per node id in ms, from samples and time deltas (hitCount × interval when absent). */
function selfTimes(profile: CpuProfile): Map<number, number> {
  const self = new Map<number, number>();
  if (profile.samples && profile.timeDeltas && profile.samples.length === profile.timeDeltas.length) {
    // timeDeltas[i] is the time before sample i; attribute the gap after a sample to it.
    for (let i = 0; i < profile.samples.length; i++) {
      const next = profile.timeDeltas[i + 1] ?? 0;
      const id = profile.samples[i]!;
      self.set(id, (self.get(id) ?? 0) + Math.max(0, next) / 1000);
    }
  } else {
    const total = (profile.endTime - profile.startTime) / 1000;
    const hits = profile.nodes.reduce((sum, n) => sum + (n.hitCount ?? 0), 0) || 1;
    for (const n of profile.nodes) self.set(n.id, ((n.hitCount ?? 0) / hits) * total);
  }
  return self;
}

export function analyse(profile: CpuProfile, topN = 15): Analysis {
  const self = selfTimes(profile);
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  // Native frames (no url) belong to their JS caller's area.
  const areaCache = new Map<number, string>();
  const nodeArea = (id: number): string => {
    const cached = areaCache.get(id);
    if (cached !== undefined) return cached;
    const frame = byId.get(id)!.callFrame;
    let area = areaOf(frame);
    if (frame.url === '' && !frame.functionName.startsWith('(')) {
      const up = parent.get(id);
      area = up === undefined ? 'node internals (timers, events, promises, buffer, …)' : nodeArea(up);
    }
    areaCache.set(id, area);
    return area;
  };
  let totalMs = 0;
  let idleMs = 0;
  const byFunction = new Map<string, { function: string; location: string; area: string; selfMs: number }>();
  const byArea = new Map<string, number>();
  for (const node of profile.nodes) {
    const ms = self.get(node.id) ?? 0;
    totalMs += ms;
    const area = nodeArea(node.id);
    if (area === 'idle') {
      idleMs += ms;
      continue;
    }
    const fn = node.callFrame.functionName || '(anonymous)';
    const location = node.callFrame.url ? `${shortUrl(node.callFrame.url)}:${node.callFrame.lineNumber + 1}` : '(native)';
    const key = `${fn}\u0000${location}`;
    const entry = byFunction.get(key) ?? { function: fn, location, area, selfMs: 0 };
    entry.selfMs += ms;
    byFunction.set(key, entry);
    byArea.set(area, (byArea.get(area) ?? 0) + ms);
  }
  const activeMs = totalMs - idleMs;
  const share = (ms: number) => (activeMs > 0 ? ms / activeMs : 0);

  // Inclusive time of entry points: a node's subtree total, counted once per sample path.
  const inclusiveRules: Array<[string, (f: CallFrame) => boolean]> = [
    ['sealing: seal/unseal (src/state/iron.ts)', (f) => /\/(src|dist)\/state\/iron\./.test(f.url)],
    ['session for the request (src/tokens/session-tokens.ts current: cookie, unseal cache, catch-up, touch)', (f) => /\/(src|dist)\/tokens\/session-tokens/.test(f.url)],
    ["request log line + metrics (src/ops/request-log.ts, called from Fastify's requestCompleted)", (f) => /\/(src|dist)\/ops\/request-log/.test(f.url)],
    ['header rewriting (src/proxy/headers.ts)', (f) => /\/(src|dist)\/proxy\/headers/.test(f.url)],
    ['pino (any log call)', (f) => /node_modules\/pino\//.test(f.url)],
    ['prom-client', (f) => /node_modules\/prom-client\//.test(f.url)],
    ['@fastify/reply-from', (f) => /@fastify\/reply-from\//.test(f.url)],
    ['undici', (f) => /node_modules\/undici\//.test(f.url)],
    ['ioredis', (f) => /node_modules\/ioredis\//.test(f.url)],
    ['token-handler src/ or dist/ (and everything it calls)', (f) => /\/(src|dist)\//.test(f.url) && !/node_modules/.test(f.url)],
  ];
  const inclusive = inclusiveRules.map(([name, test]) => {
    let ms = 0;
    for (const node of profile.nodes) {
      const own = self.get(node.id) ?? 0;
      if (own === 0) continue;
      for (let id: number | undefined = node.id; id !== undefined; id = parent.get(id)) {
        if (test(byId.get(id)!.callFrame)) {
          ms += own;
          break;
        }
      }
    }
    return { name, ms, share: share(ms) };
  });

  const attributedMs = new Map<string, number>();
  for (const node of profile.nodes) {
    const own = self.get(node.id) ?? 0;
    if (own === 0) continue;
    const leafArea = nodeArea(node.id);
    if (leafArea === 'idle') continue;
    let area = leafArea;
    if (SERVANT_AREAS.has(leafArea)) {
      for (let id = parent.get(node.id); id !== undefined; id = parent.get(id)) {
        const candidate = nodeArea(id);
        if (!SERVANT_AREAS.has(candidate) && candidate !== 'program (native, unattributed)') {
          area = candidate;
          break;
        }
      }
    }
    attributedMs.set(area, (attributedMs.get(area) ?? 0) + own);
  }

  return {
    totalMs,
    activeMs,
    attributed: [...attributedMs.entries()].map(([area, ms]) => ({ area, ms, share: share(ms) })).sort((a, b) => b.ms - a.ms),
    top: [...byFunction.values()].sort((a, b) => b.selfMs - a.selfMs).slice(0, topN).map((e) => ({ ...e, share: share(e.selfMs) })),
    areas: [...byArea.entries()].map(([area, ms]) => ({ area, selfMs: ms, share: share(ms) })).sort((a, b) => b.selfMs - a.selfMs),
    inclusive,
  };
}

export function formatAnalysis(a: Analysis, title: string): string {
  const pct = (x: number) => `${(x * 100).toFixed(1).padStart(5)}%`;
  const lines = [`${title}: ${(a.totalMs / 1000).toFixed(1)} s sampled, ${(a.activeMs / 1000).toFixed(1)} s on the main thread (not idle)`, '', 'top self time (share of non-idle main-thread time):'];
  for (const t of a.top) lines.push(`  ${pct(t.share)}  ${t.selfMs.toFixed(0).padStart(6)} ms  ${t.function}  ${t.location}  [${t.area}]`);
  lines.push('', 'self time by area:');
  for (const area of a.areas) lines.push(`  ${pct(area.share)}  ${area.selfMs.toFixed(0).padStart(6)} ms  ${area.area}`);
  lines.push('', 'attributed by caller (native, crypto and Node-internal time charged to the library or src/ code that called it):');
  for (const area of a.attributed) lines.push(`  ${pct(area.share)}  ${area.ms.toFixed(0).padStart(6)} ms  ${area.area}`);
  lines.push('', 'inclusive time (the entry point and everything below it):');
  for (const i of a.inclusive) lines.push(`  ${pct(i.share)}  ${i.ms.toFixed(0).padStart(6)} ms  ${i.name}`);
  return lines.join('\n');
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const args = process.argv.slice(2);
  const file = args.find((a) => !a.startsWith('--'));
  if (!file) {
    console.error('usage: tsx bench/analyse-profile.ts FILE.cpuprofile [--top N] [--json]');
    process.exit(2);
  }
  const topIndex = args.indexOf('--top');
  const top = topIndex !== -1 ? Number(args[topIndex + 1]) : 15;
  const analysis = analyse(JSON.parse(readFileSync(file, 'utf8')) as CpuProfile, top);
  console.log(args.includes('--json') ? JSON.stringify(analysis, null, 2) : formatAnalysis(analysis, file));
}
