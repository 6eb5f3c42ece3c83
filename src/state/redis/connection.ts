import { readFileSync } from 'node:fs';
import type { ConnectionOptions } from 'node:tls';
import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis';
import type { FastifyBaseLogger } from 'fastify';
import type { RedisConfig } from '../../config/types.js';
import { TokenHandlerError } from '../../errors.js';

/** How Redis is reached: one server (url), a master and replicas behind Sentinel, or a Cluster. */
export type RedisTopology = 'single' | 'sentinel' | 'cluster';

/** The client the state layer talks to: one connection (url, Sentinel) or a Cluster of them. */
export type StoreClient = Redis | Cluster;

/** What the connection has been through, for metrics (read when scraped). */
export interface ConnectionEvents {
  /** Reconnections begun after a dropped connection. */
  reconnects: number;
  /** Changes of master seen: another server behind Sentinel, another set of Cluster masters. */
  failovers: number;
}

export interface StoreConnection {
  readonly client: StoreClient;
  readonly topology: RedisTopology;
  /**
   * With replicas (Sentinel, Cluster): a second connection for the writes that must reach a
   * replica before they count (refresh locks and results, see refresh-coordinator.ts).
   * WAIT blocks the connection it runs on: on the shared one it would hold up every read.
   */
  readonly replicatedWrites?: StoreClient;
  readonly events: Readonly<ConnectionEvents>;
}

/**
 * Fail fast while Redis is away (no offline queue, one retry), so requests get a prompt
 * 503 instead of hanging, and reconnect by itself so service resumes when Redis returns.
 */
const FAIL_FAST: RedisOptions = {
  enableOfflineQueue: false,
  maxRetriesPerRequest: 1,
  connectTimeout: 2000,
  commandTimeout: 2000,
  retryStrategy: (attempt) => Math.min(100 * attempt, 2000),
  // A write sent to a master that a failover has just demoted: reconnect (to the new
  // master) and resend it once; READONLY means the write was not executed.
  reconnectOnError: (err) => (err.message.startsWith('READONLY') ? 2 : false),
  // Concurrent requests' reads share one round trip: one per request otherwise.
  enableAutoPipelining: true,
};

/** Opens the connection `config` describes; connections go on in the background. */
export function connectRedis(config: RedisConfig, logger: FastifyBaseLogger): StoreConnection {
  const auth = { ...(config.username ? { username: config.username } : {}), ...(config.password ? { password: config.password } : {}) };
  const tls = tlsOptions(config);
  const events: ConnectionEvents = { reconnects: 0, failovers: 0 };
  // Each connection gets options of its own: ioredis keeps (and changes) the object it is given.
  const { cluster, sentinel } = config;
  if (cluster) {
    const open = () => new Cluster(cluster.nodes.map(parseNode), clusterOptions({ ...FAIL_FAST, ...auth, ...(tls ? { tls } : {}) }));
    const client = open();
    watch(client, 'cluster', events, logger);
    return { client, topology: 'cluster', replicatedWrites: quiet(open()), events };
  }
  if (sentinel) {
    const open = () =>
      new Redis({
        ...FAIL_FAST,
        ...auth,
        sentinels: sentinel.nodes.map(parseNode),
        name: sentinel.name,
        role: 'master',
        // Sentinels announce a failover (+switch-master): leave the demoted master at once.
        failoverDetector: true,
        sentinelRetryStrategy: (attempt) => Math.min(100 * attempt, 2000),
        ...(tls ? { tls, enableTLSForSentinelMode: true, sentinelTLS: tls } : {}),
      });
    const client = open();
    watch(client, 'sentinel', events, logger);
    return { client, topology: 'sentinel', replicatedWrites: quiet(open()), events };
  }
  if (!config.url) throw new RedisConfigError('session.redis needs url, sentinel or cluster');
  const client = new Redis(config.url, { ...FAIL_FAST, ...auth, ...(tls ? { tls } : {}) });
  watch(client, 'single', events, logger);
  return { client, topology: 'single', events };
}

/** A second connection's errors are those of the first, which logs them. */
function quiet<T extends StoreClient>(client: T): T {
  client.on('error', () => undefined);
  return client;
}

/** The configuration cannot describe a connection (validation normally prevents this). */
export class RedisConfigError extends TokenHandlerError {
  readonly code = 'ERR_TH_REDIS_CONFIG';
}

/** TLS when asked for (a tls block, or rediss:// which ioredis turns on itself), with the configured CAs. */
function tlsOptions(config: RedisConfig): ConnectionOptions | undefined {
  const ca = config.tls?.caFile ? { ca: readFileSync(config.tls.caFile) } : {};
  if (config.tls !== undefined) return ca;
  return config.url?.startsWith('rediss:') ? ca : undefined;
}

function clusterOptions(node: RedisOptions): ClusterOptions {
  const { enableOfflineQueue, enableAutoPipelining, ...redisOptions } = node;
  return {
    redisOptions,
    ...(enableOfflineQueue === undefined ? {} : { enableOfflineQueue }),
    ...(enableAutoPipelining === undefined ? {} : { enableAutoPipelining }),
    clusterRetryStrategy: (attempt) => Math.min(100 * attempt, 2000),
    // During a failover a slot's master is briefly gone: retry a little, then fail (503).
    retryDelayOnFailover: 100,
    retryDelayOnClusterDown: 100,
    retryDelayOnTryAgain: 100,
    maxRedirections: 8,
    // Nodes announce themselves by IP; TLS must still check the name the operator gave.
    ...(redisOptions.tls ? { dnsLookup: (address, callback) => callback(null, address) } : {}),
    slotsRefreshTimeout: 2000,
  };
}

/** `host:port` (or `[v6]:port`) → what ioredis takes. */
export function parseNode(node: string): { host: string; port: number } {
  const at = node.lastIndexOf(':');
  return { host: node.slice(0, at).replace(/^\[(.*)\]$/, '$1'), port: Number(node.slice(at + 1)) };
}

/**
 * Logs outages once (never the URL: it may carry a password) and counts reconnects and
 * failovers: for Sentinel a `ready` on another address than the last, for Cluster a slot
 * refresh that finds another set of masters.
 */
function watch(client: StoreClient, topology: RedisTopology, events: ConnectionEvents, logger: FastifyBaseLogger): void {
  let down = false;
  let masters = '';
  const failover = (now: string) => {
    if (masters !== '' && now !== masters) {
      events.failovers++;
      logger.warn({ topology, masters: now }, 'redis failover: the master changed');
    }
    masters = now;
  };
  client.on('error', (err: Error) => {
    if (!down) logger.error({ err: err.message, topology }, 'redis connection error');
    down = true;
  });
  client.on('reconnecting', () => {
    events.reconnects++;
  });
  client.on('ready', () => {
    if (down) logger.info({ topology }, 'redis connection restored');
    down = false;
    if (client instanceof Redis) failover(`${client.stream?.remoteAddress ?? ''}:${client.stream?.remotePort ?? ''}`);
  });
  if (client instanceof Cluster) {
    client.on('refresh', () => failover(masterSet(client)));
    client.on('-node', () => {
      events.reconnects++;
    });
  }
}

function masterSet(cluster: Cluster): string {
  return cluster
    .nodes('master')
    .map((node) => `${node.options.host}:${node.options.port}`)
    .sort()
    .join(',');
}
