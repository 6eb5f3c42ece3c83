import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
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
    const probe = new Redis(port, '127.0.0.1', { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    probe.on('error', () => {
      // Refused while the server is still starting: retried below.
    });
    const deadline = Date.now() + 10_000;
    for (;;) {
      try {
        await probe.connect();
        await probe.ping();
        break;
      } catch (err) {
        if (Date.now() > deadline) throw err;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
    probe.disconnect();
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
