import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Redis, type RedisOptions } from 'ioredis';
import { freePort } from './ports.js';

/** Whether a `redis-server` binary is installed (CI installs it; .ci/run). */
export function redisServerInstalled(): boolean {
  return spawnSync('redis-server', ['--version'], { stdio: 'ignore' }).status === 0;
}

/** Says loudly why Redis tests are skipped, so a green run without them is never mistaken for coverage. */
export function warnRedisSkipped(file: string): void {
  const line = '!'.repeat(78);
  console.warn(`\n${line}\n!! SKIPPED ${file}: no redis-server binary on this machine.\n!! Install it (apt-get install redis-server) to run the Redis tests; CI does.\n${line}\n`);
}

/** A unique key prefix, so runs never collide in a shared Redis. */
export function uniquePrefix(): string {
  return `th-test:${randomBytes(6).toString('hex')}:`;
}

export interface RedisServer {
  url: string;
  port: number;
  /** Stops the server gracefully (it writes its append-only file, so data survives a restart). */
  stop(): Promise<void>;
  /** Starts it again on the same port and data directory. */
  start(): Promise<void>;
  /** Every key and value (strings and hashes), for dump inspections. */
  dump(prefix: string): Promise<Array<{ key: string; value: string }>>;
}

/**
 * Its own redis-server on a free port, with an append-only file so a restart keeps the data.
 * `extraArgs` are passed on (e.g. `--rename-command CLIENT ""` for a Redis without CLIENT).
 */
export async function startRedisServer(extraArgs: string[] = []): Promise<RedisServer> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'th-redis-'));
  let child: ChildProcess | undefined;

  async function start(): Promise<void> {
    child = spawn(
      'redis-server',
      ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'yes', '--appendfsync', 'always', '--dir', dir, ...extraArgs],
      { stdio: 'ignore' },
    );
    await untilAnswers({ port, host: '127.0.0.1' });
  }

  async function stop(): Promise<void> {
    const running = child;
    if (!running || running.exitCode !== null) return;
    await new Promise<void>((resolve) => {
      running.once('exit', () => resolve());
      running.kill('SIGTERM');
    });
  }

  await start();
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    start,
    stop,
    async dump(prefix) {
      const redis = new Redis(port, '127.0.0.1');
      try {
        const keys = await redis.keys(`${prefix}*`);
        const entries: Array<{ key: string; value: string }> = [];
        for (const key of keys) {
          const type = await redis.type(key);
          if (type === 'string') entries.push({ key, value: (await redis.get(key)) ?? '' });
          else if (type === 'hash') entries.push({ key, value: JSON.stringify(await redis.hgetall(key)) });
          else if (type === 'set') entries.push({ key, value: JSON.stringify(await redis.smembers(key)) });
        }
        return entries;
      } finally {
        redis.disconnect();
      }
    },
  };
}

/** Waits until a server (or Sentinel) on these connection options answers PING. */
async function untilAnswers(options: RedisOptions, timeoutMs = 10_000): Promise<void> {
  const probe = new Redis({ ...options, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
  probe.on('error', () => {
    // Refused while the server is still starting: retried below.
  });
  const deadline = Date.now() + timeoutMs;
  try {
    for (;;) {
      try {
        if (probe.status !== 'ready') await probe.connect();
        await probe.ping();
        return;
      } catch (err) {
        if (Date.now() > deadline) throw err;
        probe.disconnect();
        await sleep(50);
      }
    }
  } finally {
    probe.disconnect();
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `probe` until it is true (or throws after `timeoutMs`). */
async function until(what: string, probe: () => Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await probe().catch(() => false))) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** redis-server processes on 127.0.0.1 started by a topology, stopped together. */
class Processes {
  private readonly children = new Map<number, ChildProcess>();
  readonly dir = mkdtempSync(join(tmpdir(), 'th-redis-topology-'));

  start(port: number, args: string[]): void {
    const child = spawn('redis-server', args, { stdio: 'ignore' });
    this.children.set(port, child);
  }

  /** SIGKILL: a crash, nothing written on the way out. */
  kill(port: number): Promise<void> {
    return this.end(port, 'SIGKILL');
  }

  async stopAll(): Promise<void> {
    await Promise.all([...this.children.keys()].map((port) => this.end(port, 'SIGTERM')));
  }

  private async end(port: number, signal: NodeJS.Signals): Promise<void> {
    const child = this.children.get(port);
    this.children.delete(port);
    if (!child || child.exitCode !== null) return;
    await new Promise<void>((resolve) => {
      child.once('exit', () => resolve());
      child.kill(signal);
    });
  }
}

/** A Redis node's address as token-handler's configuration names it. */
const node = (port: number) => `127.0.0.1:${port}`;

export interface SentinelGroup {
  name: string;
  /** The three Sentinels, host:port. */
  sentinels: string[];
  /** The port of the current master, as the Sentinels see it. */
  masterPort(): Promise<number>;
  /** SENTINEL FAILOVER: the replica is promoted, the old master becomes its replica. */
  failover(): Promise<void>;
  /** Resolves once the Sentinels name another master than `port` and it accepts writes. */
  untilMasterIsNot(port: number): Promise<void>;
  /** Resolves once the current master has a replica again (the demoted master, resynchronised). */
  untilReplicated(): Promise<void>;
  stop(): Promise<void>;
}

/** A master, one replica and three Sentinels (quorum 2), all on free ports of 127.0.0.1. */
export async function startSentinelGroup(name = 'th-master'): Promise<SentinelGroup> {
  const processes = new Processes();
  const [master, replica, ...sentinelPorts] = await Promise.all(Array.from({ length: 5 }, () => freePort())) as [number, number, ...number[]];
  const server = (port: number) => ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', processes.dir];
  processes.start(master, server(master));
  await untilAnswers({ port: master });
  processes.start(replica, [...server(replica), '--replicaof', '127.0.0.1', String(master)]);
  await untilAnswers({ port: replica });
  for (const port of sentinelPorts) {
    // Sentinel rewrites its configuration file: one each.
    const file = join(processes.dir, `sentinel-${port}.conf`);
    writeFileSync(
      file,
      [
        `port ${port}`,
        'bind 127.0.0.1',
        `dir ${processes.dir}`,
        `sentinel monitor ${name} 127.0.0.1 ${master} 2`,
        `sentinel down-after-milliseconds ${name} 1000`,
        `sentinel failover-timeout ${name} 5000`,
        `sentinel parallel-syncs ${name} 1`,
        '',
      ].join('\n'),
    );
    processes.start(port, [file, '--sentinel']);
  }
  await Promise.all(sentinelPorts.map((port) => untilAnswers({ port })));
  const admin = (port: number) => new Redis({ port, lazyConnect: false, maxRetriesPerRequest: 1 });
  const ask = async <T>(port: number, run: (redis: Redis) => Promise<T>): Promise<T> => {
    const redis = admin(port);
    redis.on('error', () => undefined);
    try {
      return await run(redis);
    } finally {
      redis.disconnect();
    }
  };
  const masterPort = () => ask(sentinelPorts[0]!, async (s) => Number(((await s.call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', name)) as string[])[1]));
  // Ready for a failover: the replica in sync, and every Sentinel knows it.
  await until('the replica to sync', () => ask(replica, async (r) => (await r.info('replication')).includes('master_link_status:up')));
  await until('the Sentinels to know the replica', async () => {
    const counts = await Promise.all(sentinelPorts.map((port) => ask(port, async (s) => ((await s.call('SENTINEL', 'REPLICAS', name)) as unknown[]).length)));
    return counts.every((count) => count === 1);
  });
  return {
    name,
    sentinels: sentinelPorts.map(node),
    masterPort,
    async failover() {
      await ask(sentinelPorts[0]!, (s) => s.call('SENTINEL', 'FAILOVER', name));
    },
    async untilMasterIsNot(port) {
      await until('a new master', async () => {
        const now = await masterPort();
        return now !== port && (await ask(now, async (r) => (await r.info('replication')).includes('role:master')));
      });
    },
    async untilReplicated() {
      await until('the new master to have a replica in sync', async () => ask(await masterPort(), async (r) => /slave\d+:.*state=online/.test(await r.info('replication'))), 30_000);
    },
    stop: () => processes.stopAll(),
  };
}

export interface RedisCluster {
  /** Every node, host:port. */
  nodes: string[];
  /** CLUSTER FAILOVER on every replica: each promotes itself, coordinated with its master (no write lost). */
  failover(): Promise<void>;
  /** Resolves once every node reports cluster_state:ok and the masters are other than before. */
  untilMastersChanged(before: string[]): Promise<void>;
  masters(): Promise<string[]>;
  stop(): Promise<void>;
}

/** Six nodes: three masters with one replica each (redis-cli --cluster create). */
export async function startRedisCluster(): Promise<RedisCluster> {
  const processes = new Processes();
  const ports = await Promise.all(Array.from({ length: 6 }, () => freePort()));
  for (const port of ports) {
    processes.start(port, [
      '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
      '--cluster-enabled', 'yes', '--cluster-config-file', join(processes.dir, `nodes-${port}.conf`),
      '--cluster-node-timeout', '1000', '--dir', processes.dir,
    ]);
  }
  await Promise.all(ports.map((port) => untilAnswers({ port })));
  const created = spawnSync('redis-cli', ['--cluster', 'create', ...ports.map(node), '--cluster-replicas', '1', '--cluster-yes'], { encoding: 'utf8' });
  if (created.status !== 0) throw new Error(`redis-cli --cluster create failed: ${created.stdout}${created.stderr}`);
  const ask = async <T>(port: number, run: (redis: Redis) => Promise<T>): Promise<T> => {
    const redis = new Redis({ port, maxRetriesPerRequest: 1 });
    redis.on('error', () => undefined);
    try {
      return await run(redis);
    } finally {
      redis.disconnect();
    }
  };
  const role = async (port: number) => /role:(\w+)/.exec(await ask(port, (r) => r.info('replication')))?.[1];
  const healthy = async () => {
    const states = await Promise.all(ports.map((port) => ask(port, (r) => r.call('CLUSTER', 'INFO') as Promise<string>)));
    if (!states.every((state) => state.includes('cluster_state:ok'))) return false;
    const replicas = (await Promise.all(ports.map(async (port) => ((await role(port)) === 'slave' ? port : undefined)))).filter((port) => port !== undefined);
    const synced = await Promise.all(replicas.map((port) => ask(port, async (r) => (await r.info('replication')).includes('master_link_status:up'))));
    return replicas.length === 3 && synced.every(Boolean);
  };
  await until('the cluster to be ok with synced replicas', healthy, 20_000);
  const masters = async () => (await Promise.all(ports.map(async (port) => ((await role(port)) === 'master' ? node(port) : undefined)))).filter((n): n is string => n !== undefined).sort();
  return {
    nodes: ports.map(node),
    masters,
    async failover() {
      const replicas = (await Promise.all(ports.map(async (port) => ((await role(port)) === 'slave' ? port : undefined)))).filter((port): port is number => port !== undefined);
      await Promise.all(replicas.map((port) => ask(port, (r) => r.call('CLUSTER', 'FAILOVER'))));
    },
    async untilMastersChanged(before) {
      await until('the replicas to take over', async () => {
        const now = await masters();
        return now.length === 3 && now.every((m) => !before.includes(m)) && (await healthy());
      }, 20_000);
    },
    stop: () => processes.stopAll(),
  };
}

export interface TlsRedisServer {
  /** rediss:// URL without credentials. */
  url: string;
  caFile: string;
  username: string;
  password: string;
  /** Stops and starts the server again (an outage, as a restart or a failover behind one address costs). */
  restart(downMs: number): Promise<void>;
  stop(): Promise<void>;
}

/**
 * A redis-server speaking only TLS (certificate for 127.0.0.1 from a CA made here with
 * openssl), whose default user is off: only the ACL user `token-handler` may connect.
 */
export async function startTlsRedisServer(): Promise<TlsRedisServer> {
  const processes = new Processes();
  const { dir } = processes;
  const file = (name: string) => join(dir, name);
  const openssl = (...args: string[]) => {
    const run = spawnSync('openssl', args, { encoding: 'utf8' });
    if (run.status !== 0) throw new Error(`openssl ${args[0]} failed: ${run.stderr}`);
  };
  openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1', '-subj', '/CN=th-test-ca', '-keyout', file('ca.key'), '-out', file('ca.pem'));
  openssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', '/CN=127.0.0.1', '-keyout', file('server.key'), '-out', file('server.csr'));
  writeFileSync(file('san.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  openssl('x509', '-req', '-in', file('server.csr'), '-CA', file('ca.pem'), '-CAkey', file('ca.key'), '-CAcreateserial', '-days', '1', '-extfile', file('san.ext'), '-out', file('server.pem'));
  const port = await freePort();
  const username = 'token-handler';
  const password = randomBytes(12).toString('hex');
  const args = [
    '--port', '0', '--tls-port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'yes', '--appendfsync', 'always',
    '--tls-cert-file', file('server.pem'), '--tls-key-file', file('server.key'), '--tls-ca-cert-file', file('ca.pem'), '--tls-auth-clients', 'no',
    // Each word its own argument: redis-server quotes an argument that holds a space.
    '--user', 'default', 'off', '--user', username, 'on', `>${password}`, '~*', '&*', '+@all',
  ];
  const start = async () => {
    processes.start(port, args);
    await untilAnswers({ port, username, password, tls: { ca: readFileSync(file('ca.pem')) } });
  };
  await start();
  return {
    url: `rediss://127.0.0.1:${port}`,
    caFile: file('ca.pem'),
    username,
    password,
    async restart(downMs) {
      await processes.stopAll();
      await sleep(downMs);
      await start();
    },
    stop: () => processes.stopAll(),
  };
}
