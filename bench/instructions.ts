/**
 * Instructions per proxied request, counted by valgrind's callgrind: token-handler (each
 * store) and the bare proxy, each in a process of its own under callgrind, the same
 * requests as `npm run bench` (authenticated GET /api/items, 16 connections).
 *
 *   npm run bench:instructions      (builds dist/ first; ≈ 4 minutes; needs valgrind)
 *
 * Knobs: BENCH_INSTR_REQUESTS (2000 measured), BENCH_INSTR_WARMUP (8000, uninstrumented,
 * so V8's tiers settle first), BENCH_INSTR_STORES ("cookie,redis"; redis when it answers),
 * BENCH_INSTR_BARE=0 (skip the bare proxy), BENCH_INSTR_KEEP=1 (keep the callgrind dumps and V8's perf maps).
 *
 * Wall-clock figures on a shared 2-core machine move by ±20 % from one minute to the next;
 * an instruction count moves far less: the same build gives counts within about ±5 % from
 * run to run (V8's optimisation decisions differ a little between runs), so it shows what
 * a change to the hot path saves when the change is larger than that, even when it is
 * smaller than the noise of `npm run bench`. Counted: the event loop's thread (what bounds
 * a proxy's throughput). Left out: V8's background threads (GC, compilers), time in the
 * kernel (system calls: the same for both sides except log writes) and memory effects
 * (cache misses). The memory store keeps sessions in its process, so it is not measured.
 *
 * Then, for each token-handler target, where its instructions beyond the bare proxy's go:
 * by area and by function (callgrind's per-function counts, the JIT-compiled JavaScript
 * named through V8's perf map, `--perf-basic-prof`; bench/lib/callgrind.ts). With the same
 * flags and build, two runs gave totals within 1.5 %; a function's count is exact for
 * its own instructions, but V8 inlines small functions into their callers, so read a
 * caller's count as including what it inlined.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync, mkdtempSync, rmSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import { functionCosts, type FunctionCost } from './lib/callgrind.js';
import { spawnChild } from './lib/rpc.js';
import { API_PATH, SECRET, SESSION_COOKIE, benchConfig, browserHeaders, followSetCookie, plainConfig, randomPrefix, redisAnswers, startProviderAndUpstream, startTokenHandler, login, type Store } from './lib/stack.js';
import { Sealer } from '../src/state/sealer.js';
import type { SessionRecord } from '../src/state/record.js';

const requests = Number(process.env.BENCH_INSTR_REQUESTS ?? 2000);
const warmup = Number(process.env.BENCH_INSTR_WARMUP ?? 8000);
const connections = 16;
/** Requests between two takes of the session cookie during the warm-up. */
const WARMUP_CHUNK = 4000;
const serverScript = fileURLToPath(new URL('./lib/plain-server.mjs', import.meta.url));

if (spawnSync('valgrind', ['--version'], { stdio: 'ignore' }).status !== 0) {
  console.error('bench/instructions.ts needs valgrind (Debian: apt-get install valgrind).');
  process.exit(1);
}

const providerChild = spawnChild('./provider-child.ts');
const upstreamChild = spawnChild('./upstream-child.ts');
const workDir = mkdtempSync(join(tmpdir(), 'th-instr-'));
try {
  const { provider, upstream } = await startProviderAndUpstream(providerChild, upstreamChild);
  const redisUp = await redisAnswers();
  const stores: Store[] = (process.env.BENCH_INSTR_STORES?.split(',') as Store[] | undefined) ?? ['cookie', ...(redisUp ? (['redis'] as const) : [])];
  const rows: Array<{ target: string; instructions: number; functions: FunctionCost[] }> = [];
  let bearer = '';
  let bareCookie = '';
  for (const store of stores) {
    // Logged in through a token-handler in this process; the measured one (same secret, same
    // Redis prefix) accepts that browser's cookie: sealed for the cookie store, a pointer to
    // the shared record for redis. (The memory store keeps sessions in the process, so it
    // cannot be measured this way.)
    const redisPrefix = randomPrefix();
    const loginSide = await startTokenHandler({ provider, upstreamUrl: upstream.url, store, redisPrefix });
    const cookie = await login(loginSide.app, `instr-${store}`);
    await loginSide.close();
    if (store === 'cookie') {
      bareCookie = cookie;
      bearer = (await new Sealer([SECRET]).unseal<SessionRecord>(cookie.slice(SESSION_COOKIE.length + 1)))!.accessToken;
    }
    const config = benchConfig({ provider, upstreamUrl: upstream.url, store, redisPrefix });
    rows.push({ target: `th-${store}`, ...(await measure(`th-${store}`, { kind: 'th', config: plainConfig(config) }, cookie)) });
  }
  if (bearer && process.env.BENCH_INSTR_BARE !== '0') rows.push({ target: 'bare-proxy', ...(await measure('bare-proxy', { kind: 'bare', upstreamUrl: upstream.url, bearer }, bareCookie)) });
  const bare = rows.find((r) => r.target === 'bare-proxy');
  console.log(`\ninstructions per request (${requests} requests after ${warmup} uninstrumented, ${connections} connections):`);
  for (const row of rows) {
    const perRequest = row.instructions / requests;
    console.log(
      `  ${row.target.padEnd(11)} ${Math.round(perRequest).toLocaleString('en').padStart(9)}` +
        (bare ? `   bare/this ${(bare.instructions / row.instructions).toFixed(3)}   added ${Math.round((row.instructions - bare.instructions) / requests).toLocaleString('en')}` : ''),
    );
  }
  if (bare) for (const row of rows) if (row !== bare) printAdded(row.target, row.functions, bare.functions);
} finally {
  // BENCH_INSTR_KEEP=1 keeps the callgrind dumps, e.g. for `callgrind_annotate --tree=caller`.
  if (process.env.BENCH_INSTR_KEEP === '1') console.log(`callgrind dumps kept in ${workDir}`);
  else rmSync(workDir, { recursive: true, force: true });
  await upstreamChild.call('stop').catch(() => undefined);
  await providerChild.call('stop').catch(() => undefined);
  await upstreamChild.stop();
  await providerChild.stop();
}

async function measure(label: string, spec: Record<string, unknown>, cookie: string): Promise<{ instructions: number; functions: FunctionCost[] }> {
  const out = join(workDir, `${label}.callgrind`);
  const child = spawn(
    'valgrind',
    ['--tool=callgrind', '--instr-atstart=no', '--separate-threads=yes', `--callgrind-out-file=${out}`, process.execPath, '--perf-basic-prof', serverScript],
    { env: { ...process.env, PLAIN_SERVER: JSON.stringify(spec) }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  try {
    const port = await portOf(child);
    const url = `http://127.0.0.1:${port}${API_PATH}`;
    const headers = browserHeaders(cookie);
    process.stdout.write(`${label}: warm-up… `);
    // In chunks, keeping each cookie the session sets (as a browser would): under valgrind a
    // long warm-up outlives the touch interval and the access token, after which a client
    // still sending the first cookie would have every request re-sealed.
    for (let done = 0; done < warmup; done += WARMUP_CHUNK) {
      await followSetCookie(url, headers);
      await fire(url, headers, Math.min(WARMUP_CHUNK, warmup - done));
    }
    await followSetCookie(url, headers);
    execFileSync('callgrind_control', ['--instr=on', String(child.pid)], { stdio: 'ignore' });
    await fire(url, headers, requests);
    execFileSync('callgrind_control', ['--dump', String(child.pid)], { stdio: 'ignore' });
    const dumps = readdirSync(workDir).filter((f) => f.startsWith(`${label}.callgrind`));
    let total = 0;
    let mainDump = '';
    const perThread: string[] = [];
    for (const dump of dumps.sort()) {
      const text = readFileSync(join(workDir, dump), 'utf8');
      const match = /^(?:summary|totals): (\d+)/m.exec(text);
      const thread = /^thread: (\d+)/m.exec(text)?.[1] ?? '?';
      const count = Number(match?.[1] ?? 0);
      perThread.push(`${dump.slice(label.length)} t${thread} ${Math.round(count / requests)}`);
      // The event loop's thread (1) is what bounds a proxy's throughput.
      if (thread === '1' && count > total) {
        total = count;
        mainDump = join(workDir, dump);
      }
    }
    console.log(perThread.join(', '));
    console.log(`${Math.round(total / requests).toLocaleString('en')} instructions per request`);
    // V8's perf map (--perf-basic-prof) names the JIT-compiled functions callgrind sees as addresses.
    const perfMap = `/tmp/perf-${child.pid}.map`;
    return { instructions: total, functions: functionCosts(mainDump, perfMap) };
  } finally {
    child.kill('SIGKILL');
    if (process.env.BENCH_INSTR_KEEP !== '1') rmSync(`/tmp/perf-${child.pid}.map`, { force: true });
  }
}

/** Where a target's instructions beyond the bare proxy's go, per request: by area, then the largest functions. */
function printAdded(target: string, functions: FunctionCost[], bare: FunctionCost[]): void {
  const perRequest = (n: number) => n / requests;
  const sumBy = (list: FunctionCost[], key: (f: FunctionCost) => string) => {
    const sums = new Map<string, number>();
    for (const f of list) sums.set(key(f), (sums.get(key(f)) ?? 0) + f.instructions);
    return sums;
  };
  const table = (title: string, ours: Map<string, number>, theirs: Map<string, number>, limit: number) => {
    const rows = [...new Set([...ours.keys(), ...theirs.keys()])]
      .map((name) => ({ name, ours: perRequest(ours.get(name) ?? 0), theirs: perRequest(theirs.get(name) ?? 0) }))
      .sort((a, b) => b.ours - b.theirs - (a.ours - a.theirs))
      .slice(0, limit);
    console.log(`\n${title}`);
    for (const row of rows) {
      console.log(`  ${Math.round(row.ours - row.theirs).toLocaleString('en').padStart(7)}  (${Math.round(row.ours).toLocaleString('en').padStart(7)} vs ${Math.round(row.theirs).toLocaleString('en').padStart(7)})  ${row.name}`);
    }
  };
  table(`${target}: instructions per request beyond the bare proxy's, by area (added, ${target} vs bare)`, sumBy(functions, (f) => f.area), sumBy(bare, (f) => f.area), 12);
  table(`${target}: the functions that add the most`, sumBy(functions, (f) => f.name), sumBy(bare, (f) => f.name), 25);
}

function portOf(child: ChildProcess): Promise<number> {
  return new Promise((resolve, reject) => {
    let text = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      text += chunk.toString();
      const line = text.split('\n').find((l) => l.startsWith('{"port"'));
      if (line) resolve((JSON.parse(line) as { port: number }).port);
    });
    child.once('exit', (code) => reject(new Error(`server exited (${code}) before listening: ${text.slice(-500)}`)));
  });
}

async function fire(url: string, headers: Record<string, string>, amount: number): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    autocannon({ url, headers, connections, pipelining: 1, amount, timeout: 60 }, (err, result) => {
      if (err) reject(err);
      else if (result.non2xx || result.errors) reject(new Error(`${result.non2xx} non-2xx, ${result.errors} errors`));
      else resolve();
    });
  });
}
