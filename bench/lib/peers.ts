/**
 * The peers users would pick instead of token-handler, run locally from Debian's packages
 * as child processes of the bench (configurations written to a temp dir, free ports on
 * 127.0.0.1, nothing of the system's own configuration read):
 *
 * - **nginx** as a bare proxy — the C floor: `proxy_pass` with keep-alive connections to
 *   the upstream, the Cookie header dropped and a fixed bearer header set. One worker
 *   process (one event loop, like one token-handler process).
 * - **Apache httpd with mod_auth_openidc** — the BFF peer, the C implementation of the same
 *   job: a client registered at the bench provider, its session obtained by driving the
 *   login over HTTP, `/api` proxied with `Authorization: Bearer %{OIDC_access_token}e`.
 *   Defaults otherwise (server-side session in the shm cache), event MPM in one process.
 *
 * A missing binary is installed with apt-get when the bench runs as root (said so), else
 * the peer is skipped LOUDLY by the caller (`ensurePeers` says which are available).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, chmodSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { get as httpGet } from 'node:http';
import { CookieJar, completeProviderLogin, isRedirect } from '../../test/support/browser.js';
import { WRK, wrkAvailable } from './wrk.js';

export const NGINX = '/usr/sbin/nginx';
export const APACHE = '/usr/sbin/apache2';
export const APACHE_MODULES = '/usr/lib/apache2/modules';
const OIDC_MODULE = `${APACHE_MODULES}/mod_auth_openidc.so`;

export interface PeerAvailability {
  nginx: boolean;
  apache: boolean;
  /** The production phase's load generator (bench/lib/wrk.ts); autocannon when missing. */
  wrk: boolean;
  /** What was done or why a peer is missing, for the report. */
  notes: string[];
}

/** Whether nginx, Apache with mod_auth_openidc and wrk are here; installs them with apt-get when missing and root. */
export function ensurePeers(say: (line: string) => void): PeerAvailability {
  const notes: string[] = [];
  const have = () => ({ nginx: existsSync(NGINX), apache: existsSync(APACHE) && existsSync(OIDC_MODULE) && existsSync(`${APACHE_MODULES}/mod_proxy_http.so`), wrk: wrkAvailable() });
  let found = have();
  if ((!found.nginx || !found.apache || !found.wrk) && process.getuid?.() === 0 && process.env.BENCH_NO_INSTALL !== '1') {
    const packages = [...(found.nginx ? [] : ['nginx-light']), ...(found.apache ? [] : ['apache2', 'libapache2-mod-auth-openidc']), ...(found.wrk ? [] : ['wrk'])];
    const line = `running as root: apt-get install -y ${packages.join(' ')} (the bench's peers; BENCH_NO_INSTALL=1 skips this)`;
    say(line);
    notes.push(line);
    try {
      execFileSync('apt-get', ['update'], { stdio: 'ignore', timeout: 120_000 });
      execFileSync('apt-get', ['install', '-y', '--no-install-recommends', ...packages], { stdio: 'ignore', timeout: 300_000, env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
    } catch (err) {
      notes.push(`apt-get failed: ${(err as Error).message.split('\n')[0]}`);
    }
    found = have();
  }
  if (!found.nginx) notes.push(`nginx missing (${NGINX}): the nginx peer is SKIPPED`);
  if (!found.wrk) notes.push(`wrk missing (${WRK}): the production phase's load is autocannon, whose own CPU limits every Node target on 2 cores (figures NOT comparable with wrk runs)`);
  if (!found.apache) notes.push(`Apache with mod_auth_openidc missing (${APACHE}, ${OIDC_MODULE}): the mod_auth_openidc peer is SKIPPED`);
  return { ...found, notes };
}

/** A free TCP port on 127.0.0.1 (closed again before use: a tiny race, fine on a bench machine). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** A route of a peer: `/api/` → upstream origin (the path after the prefix is kept, as token-handler does). */
export interface PeerRoute {
  prefix: string;
  upstream: string;
}

export interface RunningPeer {
  name: string;
  url: string;
  /** The master process and its workers, for CPU time and RSS from /proc. */
  pids(): number[];
  stop(): Promise<void>;
  /** The last lines of its error log (for a failure report). */
  errorLog(): string;
}

async function waitForPort(url: string, child: ChildProcess, log: () => string, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  let lastError = '';
  while (Date.now() < end) {
    if (child.exitCode !== null) throw new Error(`exited with code ${child.exitCode}: ${log()}`);
    try {
      const response = await fetch(url, { redirect: 'manual', signal: AbortSignal.timeout(1000) });
      await response.arrayBuffer();
      return;
    } catch (err) {
      lastError = (err as Error).message;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`did not answer at ${url} within ${timeoutMs} ms (${lastError}): ${log()}`);
}

function tail(file: string, lines = 15): string {
  try {
    return readFileSync(file, 'utf8').trim().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

function spawnPeer(binary: string, args: string[], dir: string): ChildProcess {
  const child = spawn(binary, args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'], detached: false });
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr = (stderr + chunk.toString()).slice(-4000);
  });
  (child as ChildProcess & { stderrText?: () => string }).stderrText = () => stderr;
  return child;
}

async function stopPeer(child: ChildProcess, dir: string): Promise<void> {
  if (child.exitCode === null && child.signalCode === null) {
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  }
  rmSync(dir, { recursive: true, force: true });
}

/** nginx as a bare proxy (the C floor): keep-alive upstream pools, Cookie dropped, a fixed bearer set. */
export async function startNginx(routes: PeerRoute[], bearer: string): Promise<RunningPeer> {
  const dir = mkdtempSync(join(tmpdir(), 'th-bench-nginx-'));
  chmodSync(dir, 0o777);
  const port = await freePort();
  const upstreams = routes.map((route, i) => `  upstream u${i} { server ${new URL(route.upstream).host}; keepalive 64; }`).join('\n');
  const locations = routes
    .map(
      (route, i) => `    location ${route.prefix}/ {
      proxy_pass http://u${i}/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Cookie "";
      proxy_set_header Authorization "Bearer ${bearer}";
    }`,
    )
    .join('\n');
  const conf = `worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path ${dir}/client_body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 65;
${upstreams}
  server {
    listen 127.0.0.1:${port};
    location = /healthz { return 200 "ok"; }
${locations}
  }
}
`;
  const file = join(dir, 'nginx.conf');
  writeFileSync(file, conf);
  const child = spawnPeer(NGINX, ['-c', file, '-p', `${dir}/`, '-e', `${dir}/error.log`], dir);
  const url = `http://127.0.0.1:${port}`;
  const log = () => `${tail(join(dir, 'error.log'))} ${(child as ChildProcess & { stderrText: () => string }).stderrText()}`;
  await waitForPort(`${url}/healthz`, child, log);
  return { name: 'nginx', url, pids: () => processTree(child.pid!), stop: () => stopPeer(child, dir), errorLog: log };
}

/**
 * A top-level navigation, through node:http: fetch always sends `sec-fetch-mode: cors`,
 * which mod_auth_openidc takes for an XHR and answers with 401 instead of a login.
 */
function navigate(jar: CookieJar, url: string): Promise<{ status: number; location?: string; body: string }> {
  return new Promise((resolve, reject) => {
    const cookie = jar.cookieHeader(url);
    const req = httpGet(url, { headers: { accept: 'text/html', ...(cookie ? { cookie } : {}) } }, (res) => {
      for (const value of res.headers['set-cookie'] ?? []) jar.setCookie(url, value);
      let body = '';
      res.on('data', (chunk: Buffer) => (body += chunk.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, ...(res.headers.location ? { location: res.headers.location } : {}), body }));
    });
    req.on('error', reject);
  });
}

export interface ApacheOidc {
  peer: RunningPeer;
  /** The client to register at the provider before logging in (redirect URI on this Apache). */
  client: Record<string, unknown>;
  /** Logs a browser in through Apache and the provider; returns the Cookie header value of its session. */
  login(user: string): Promise<string>;
}

/**
 * Apache httpd (event MPM, one process of 64 threads) with mod_auth_openidc in front of the
 * routes. `registerClient` must register `client` at the provider before `login`.
 */
export async function startApacheOidc(options: {
  discoveryUrl: string;
  routes: PeerRoute[];
  registerClient: (metadata: Record<string, unknown>) => Promise<void>;
}): Promise<ApacheOidc> {
  const dir = mkdtempSync(join(tmpdir(), 'th-bench-apache-'));
  chmodSync(dir, 0o777);
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const clientId = `apache-bench-${randomBytes(4).toString('hex')}`;
  const clientSecret = randomBytes(24).toString('base64url');
  const redirectUri = `${url}/oidc/callback`;
  const modules = ['mpm_event', 'authz_core', 'authz_user', 'authn_core', 'headers', 'proxy', 'proxy_http', 'socache_shmcb', 'auth_openidc'];
  const moduleName = (m: string) => (m === 'auth_openidc' ? 'auth_openidc_module' : `${m}_module`);
  const asRoot = process.getuid?.() === 0;
  const proxies = routes(options.routes);
  const conf = `ServerRoot ${dir}
ServerName 127.0.0.1
Listen 127.0.0.1:${port}
PidFile ${dir}/httpd.pid
DefaultRuntimeDir ${dir}
Mutex file:${dir} default
ErrorLog ${dir}/error.log
LogLevel warn
${modules.map((m) => `LoadModule ${moduleName(m)} ${APACHE_MODULES}/mod_${m}.so`).join('\n')}
${asRoot ? 'User www-data\nGroup www-data' : ''}
StartServers 1
ServerLimit 1
ThreadLimit 64
ThreadsPerChild 64
MinSpareThreads 1
MaxSpareThreads 64
MaxRequestWorkers 64
MaxConnectionsPerChild 0
KeepAlive On
MaxKeepAliveRequests 0
KeepAliveTimeout 65

OIDCProviderMetadataURL ${options.discoveryUrl}
OIDCClientID ${clientId}
OIDCClientSecret ${clientSecret}
OIDCRedirectURI ${redirectUri}
OIDCCryptoPassphrase ${randomBytes(24).toString('base64url')}
OIDCScope "openid profile email"
OIDCPKCEMethod S256
OIDCProviderTokenEndpointAuth client_secret_basic
OIDCSSLValidateServer Off
OIDCPassClaimsAs environment
OIDCCookieSameSite On
OIDCStripCookies mod_auth_openidc_session

<Location />
  AuthType openid-connect
  Require valid-user
</Location>
${proxies}
`;
  function routes(list: PeerRoute[]): string {
    return list
      .map(
        (route) => `ProxyPass ${route.prefix}/ ${route.upstream}/ keepalive=On
<Location ${route.prefix}/>
  RequestHeader set Authorization "Bearer %{OIDC_access_token}e"
  RequestHeader unset Cookie
</Location>`,
      )
      .join('\n');
  }
  const file = join(dir, 'httpd.conf');
  writeFileSync(file, conf);
  const client = {
    client_id: clientId,
    client_secret: clientSecret,
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    application_type: 'web',
    redirect_uris: [redirectUri],
  };
  await options.registerClient(client);
  const child = spawnPeer(APACHE, ['-f', file, '-d', dir, '-DFOREGROUND'], dir);
  const log = () => `${tail(join(dir, 'error.log'))} ${(child as ChildProcess & { stderrText: () => string }).stderrText()}`;
  // Any answer will do (a redirect to the provider).
  await waitForPort(`${url}/`, child, log);
  const peer: RunningPeer = { name: 'mod_auth_openidc', url, pids: () => processTree(child.pid!), stop: () => stopPeer(child, dir), errorLog: log };
  return {
    peer,
    client,
    async login(user: string): Promise<string> {
      const jar = new CookieJar();
      // A browser navigates to a protected page: 302 to the provider, with mod_auth_openidc's state cookie.
      const start = await navigate(jar, `${url}/`);
      if (!isRedirect(start.status) || !start.location) throw new Error(`apache: expected a redirect to the provider, got ${start.status}: ${start.body.slice(0, 300)} ${log()}`);
      const callback = await completeProviderLogin(new URL(start.location, url).href, { login: user });
      const back = await navigate(jar, callback);
      if (!isRedirect(back.status)) throw new Error(`apache: callback answered ${back.status}: ${back.body.slice(0, 300)} ${log()}`);
      const session = jar.all(url).find((c) => c.name === 'mod_auth_openidc_session');
      if (!session) throw new Error(`apache: no session cookie after the callback: ${log()}`);
      return `${session.name}=${session.value}`;
    },
  };
}

// ---------------------------------------------------------------------------
// CPU time and RSS of a process tree, from /proc
// ---------------------------------------------------------------------------

const CLOCK_TICKS = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** `pid` and its descendants (nginx's worker, Apache's child processes). */
export function processTree(pid: number): number[] {
  const parents = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      const list = parents.get(ppid) ?? [];
      list.push(Number(entry));
      parents.set(ppid, list);
    } catch {
      // gone meanwhile
    }
  }
  const out: number[] = [];
  const walk = (p: number) => {
    out.push(p);
    for (const c of parents.get(p) ?? []) walk(c);
  };
  walk(pid);
  return out;
}

/** User + system CPU time of these processes (all their threads), in µs. */
export function procCpuUs(pids: number[]): number {
  let ticks = 0;
  for (const pid of pids) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      // Fields after the name, 0-based from "state": utime is field 14 of stat (index 11 here), stime 15.
      ticks += Number(fields[11]) + Number(fields[12]);
    } catch {
      // gone meanwhile
    }
  }
  return (ticks / CLOCK_TICKS) * 1e6;
}

/** Resident set size of these processes, summed (bytes; shared pages counted per process). */
export function procRss(pids: number[]): number {
  let kb = 0;
  for (const pid of pids) {
    try {
      const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
      kb += Number(match?.[1] ?? 0);
    } catch {
      // gone meanwhile
    }
  }
  return kb * 1024;
}
