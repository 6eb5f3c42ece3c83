/**
 * Two builds of token-handler under load at the same time: does a change to the hot path
 * make it faster? `npm run bench` alternates targets in 2-second slices, and on a shared
 * 2-core machine the rate moves by ±20 % between slices, which hides a change worth a few
 * per cent. Here both builds serve the same session (same secret) at once, each driven by
 * its own load generator with 16 connections, so whatever slows the machine slows both;
 * each round gives the ratio B/A, and the drivers swap every round. The load is wrk's on the
 * production phase's no-work upstream when wrk is installed (what the proxies cost shows;
 * autocannon's one Node loop would be the limit), else autocannon's on the introspecting
 * upstream, said loudly; COMPARE_GENERATOR=autocannon chooses the latter.
 *
 *   git worktree add /tmp/base HEAD~1 && ln -s "$PWD/node_modules" /tmp/base/node_modules
 *   (cd /tmp/base && npm run build) && npm run build
 *   npx tsx bench/compare.ts /tmp/base .        (≈ 40 s; COMPARE_ROUNDS=10, COMPARE_STORE=cookie)
 *
 * Each directory needs a compiled dist/ and bench/lib/plain-server.mjs (any checkout of this
 * repository after `npm run build`). Measured here: the same build against itself gave
 * per-round ratios of 0.94–1.07 with a median within 3 % of 1, so read a median beyond that as
 * a change.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { resolve } from 'node:path';
import { spawnChild } from './lib/rpc.js';
import { API_PATH, benchConfig, browserHeaders, followSetCookie, login, plainConfig, randomPrefix, SESSION_COOKIE, startProviderAndUpstream, startTokenHandler, type Store } from './lib/stack.js';
import { wrkAvailable } from './lib/wrk.js';

const [dirA, dirB] = process.argv.slice(2).map((dir) => resolve(dir));
if (!dirA || !dirB) {
  console.error('usage: npx tsx bench/compare.ts <checkout A> <checkout B>   (each built with npm run build)');
  process.exit(2);
}
const rounds = Number(process.env.COMPARE_ROUNDS ?? 10);
const store = (process.env.COMPARE_STORE ?? 'cookie') as Store;
const generator = process.env.COMPARE_GENERATOR === 'autocannon' || !wrkAvailable() ? 'autocannon' : 'wrk';
if (generator === 'autocannon' && process.env.COMPARE_GENERATOR !== 'autocannon') {
  console.log('\n!!!!!!!! wrk is not installed (apt-get install wrk): autocannon drives the builds, and its one Node loop may be the limit !!!!!!!!\n');
}

const providerChild = spawnChild('./provider-child.ts');
const upstreamChild = spawnChild('./upstream-child.ts');
const loads = [spawnChild('./load-child.ts'), spawnChild('./load-child.ts')];
const servers: ChildProcess[] = [];
try {
  const started = await startProviderAndUpstream(providerChild, upstreamChild);
  const provider = started.provider;
  const upstream = generator === 'wrk' ? await upstreamChild.call<{ url: string }>('startCheap') : started.upstream;
  // Logged in once, here; both builds accept the browser's cookie (same secret, same Redis prefix).
  const redisPrefix = randomPrefix();
  const loginSide = await startTokenHandler({ provider, upstreamUrl: upstream.url, store, redisPrefix });
  const headers = browserHeaders(await login(loginSide.app, 'compare'));
  // wrk sends the session's cookie from a cookie set (and keeps what the builds set in it).
  const { cookie, ...spa } = headers;
  for (const load of loads) await load.call('setCookies', { set: 'compare', cookies: [cookie] });
  await loginSide.close();
  const config = plainConfig(benchConfig({ provider, upstreamUrl: upstream.url, store, redisPrefix }));
  const urls = [await start(dirA, config), await start(dirB, config)];
  const slice = (driver: number, build: number, seconds: number) =>
    loads[driver]!.call<{ rps: number; non2xx: number; errors: number }>('slice', {
      target: `build-${build}-driver-${driver}`,
      url: urls[build]!,
      connections: 16,
      durationSeconds: seconds,
      ...(generator === 'wrk'
        ? { headers: spa, generator, rotate: { set: 'compare', sessions: 1, cookieName: SESSION_COOKIE } }
        : { headers }),
    });
  for (const url of urls) await followSetCookie(url, headers);
  await Promise.all([slice(0, 0, 4), slice(1, 1, 4)]);
  const ratios: number[] = [];
  for (let round = 0; round < rounds; round++) {
    const swap = round % 2 === 1;
    const [a, b] = await Promise.all([slice(swap ? 1 : 0, 0, 2), slice(swap ? 0 : 1, 1, 2)]);
    if (a.non2xx + a.errors + b.non2xx + b.errors > 0) throw new Error(`non-2xx or errors: A ${a.non2xx}/${a.errors}, B ${b.non2xx}/${b.errors}`);
    ratios.push(b.rps / a.rps);
    console.log(`round ${round + 1}/${rounds}: A ${Math.round(a.rps)}/s, B ${Math.round(b.rps)}/s, B/A ${(b.rps / a.rps).toFixed(3)}`);
  }
  const sorted = [...ratios].sort((x, y) => x - y);
  console.log(`\nB/A req/s (${store} store, ${generator}), median over ${rounds} rounds: ${sorted[Math.floor(sorted.length / 2)]!.toFixed(3)} (range ${sorted[0]!.toFixed(3)}–${sorted.at(-1)!.toFixed(3)})`);
  console.log(`A: ${dirA}\nB: ${dirB}`);
} finally {
  for (const server of servers) server.kill('SIGKILL');
  await upstreamChild.call('stop').catch(() => undefined);
  await providerChild.call('stop').catch(() => undefined);
  for (const child of [upstreamChild, providerChild, ...loads]) await child.stop();
}

/** One build's token-handler (its dist/, through its plain-server.mjs), listening on a free port. */
function start(dir: string, config: Record<string, unknown>): Promise<string> {
  return new Promise((resolveUrl, reject) => {
    const server = spawn(process.execPath, [`${dir}/bench/lib/plain-server.mjs`], {
      env: { ...process.env, PLAIN_SERVER: JSON.stringify({ kind: 'th', config }) },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    servers.push(server);
    let text = '';
    server.stdout!.on('data', (chunk: Buffer) => {
      text += chunk.toString();
      const port = /"port":(\d+)/.exec(text)?.[1];
      if (port) resolveUrl(`http://127.0.0.1:${port}${API_PATH}`);
    });
    server.once('exit', (code) => reject(new Error(`${dir}: server exited (${code}) before listening`)));
  });
}
