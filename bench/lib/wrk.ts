/**
 * wrk (Debian's package) as the production phase's load generator: a C event loop costs a
 * fraction of autocannon's CPU per request, which on a 2-core machine decides what is
 * measured — with autocannon (~5,000 req/s from its one Node core here) every Node proxy
 * looked alike, the load generator being the limit; with wrk the bare proxy does ~8,000
 * and the differences between proxies show (bench/README.md, "Load generator").
 *
 * One slice = one wrk run (1 thread, fixed connections and seconds) with
 * bench/lib/wrk-sessions.lua: sessions rotated per request, Set-Cookies kept per session.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const WRK = '/usr/bin/wrk';
const SCRIPT = fileURLToPath(new URL('./wrk-sessions.lua', import.meta.url));

export function wrkAvailable(): boolean {
  return existsSync(WRK);
}

export interface WrkSliceParams {
  url: string;
  headers: Record<string, string>;
  connections: number;
  durationSeconds: number;
  /** The cookie set, one Cookie header value per session; the first `sessions` are used. */
  cookies: string[];
  sessions: number;
  cookieName: string;
}

export interface WrkSlice {
  requests: number;
  seconds: number;
  /** Responses with a status ≥ 400 (wrk's own count). */
  non2xx: number;
  errors: number;
  /** Latency quantiles 0.05 %, 0.15 %, … 99.95 % (ms): a slice's distribution in 1,000 points. */
  quantilesMs: number[];
  /** Cookies the responses set, by session index: the set's entries to replace. */
  taken: Map<number, string>;
}

/** A directory for the cookie files, removed when the process exits. */
let dir: string | undefined;
function workDir(): string {
  if (!dir) {
    dir = mkdtempSync(join(tmpdir(), 'th-bench-wrk-'));
    const made = dir;
    process.once('exit', () => rmSync(made, { recursive: true, force: true }));
  }
  return dir;
}

/** The cookie file of a set, written again only when the set changed (10,000 cookie-store cookies are ~33 MB). */
const written = new WeakMap<string[], { file: string; version: number }>();
const versions = new WeakMap<string[], number>();
let files = 0;

/** Marks a cookie set changed (a Set-Cookie was taken into it): its file is written again before the next slice. */
export function cookiesChanged(cookies: string[]): void {
  versions.set(cookies, (versions.get(cookies) ?? 0) + 1);
}

function cookieFile(cookies: string[]): string {
  const version = versions.get(cookies) ?? 0;
  const known = written.get(cookies);
  if (known && known.version === version) return known.file;
  const file = known?.file ?? join(workDir(), `cookies-${++files}.txt`);
  writeFileSync(file, `${cookies.join('\n')}\n`);
  written.set(cookies, { file, version });
  return file;
}

export async function wrkSlice(params: WrkSliceParams): Promise<WrkSlice> {
  const cookies = cookieFile(params.cookies);
  const jar = join(workDir(), `jar-${++files}.txt`);
  writeFileSync(jar, '');
  const args = ['-t1', `-c${params.connections}`, `-d${params.durationSeconds}s`, '--timeout', '10s', '-s', SCRIPT];
  for (const [name, value] of Object.entries(params.headers)) args.push('-H', `${name}: ${value}`);
  args.push(params.url, '--', cookies, jar, params.cookieName, String(params.sessions));
  const stdout = await new Promise<string>((resolve, reject) =>
    execFile(WRK, args, { maxBuffer: 1 << 22, timeout: (params.durationSeconds + 30) * 1000 }, (err, out, errOut) =>
      err ? reject(new Error(`wrk failed: ${err.message} ${String(errOut).slice(0, 400)}`)) : resolve(String(out)),
    ),
  );
  const line = stdout.split('\n').find((l) => l.startsWith('BENCH-WRK '));
  if (!line) throw new Error(`wrk printed no summary: ${stdout.slice(0, 400)}`);
  const summary = JSON.parse(line.slice('BENCH-WRK '.length)) as { requests: number; durationUs: number; non2xx: number; errors: number; quantilesUs: number[] };
  const taken = new Map<number, string>();
  for (const entry of readFileSync(jar, 'utf8').split('\n')) {
    const tab = entry.indexOf('\t');
    if (tab > 0) taken.set(Number(entry.slice(0, tab)) - 1, entry.slice(tab + 1));
  }
  rmSync(jar, { force: true });
  return {
    requests: summary.requests,
    seconds: summary.durationUs / 1e6,
    non2xx: summary.non2xx,
    errors: summary.errors,
    quantilesMs: summary.quantilesUs.map((us) => us / 1000),
    taken,
  };
}
