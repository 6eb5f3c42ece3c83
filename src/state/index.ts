import { Redis } from 'ioredis';
import type { FastifyBaseLogger } from 'fastify';
import type { SessionConfig } from '../config/types.js';
import type { Sealer } from './sealer.js';
import type { Denylist, RefreshCoordinator, SeenOnce, SessionSignals, SessionStore } from './ports.js';
import { MemorySessionSignals } from './memory/session-signals.js';
import { RedisSessionSignals } from './redis/session-signals.js';
import { MemoryDenylist } from './memory/denylist.js';
import { MemorySeenOnce } from './memory/seen-once.js';
import { MemorySessionStore } from './memory/session-store.js';
import { connectRedis, type ConnectionEvents, type RedisTopology, type StoreClient, type StoreConnection } from './redis/connection.js';
import { KeyLayout } from './redis/keys.js';
import { RedisDenylist } from './redis/denylist.js';
import { RedisRefreshCoordinator } from './redis/refresh-coordinator.js';
import { RedisSeenOnce } from './redis/seen-once.js';
import { RedisSessionStore } from './redis/session-store.js';
import { RedisTrackedCache } from './redis/tracked-cache.js';

/**
 * A locally cached Redis entry is re-read after this whatever happens. What bounds a missed
 * invalidation is the heartbeat below; this only keeps long-idle entries from living forever.
 */
const LOCAL_CACHE_TTL_MS = 300_000;
/** The invalidation connection answers a PING this often, or the local cache turns off (see tracked-cache.ts). */
const LOCAL_CACHE_HEARTBEAT_MS = 2_000;
/** How long a new refresh lock may take to reach a replica (Sentinel, Cluster); well under a millisecond normally. */
const LOCK_REPLICA_ACK_MS = 500;

/**
 * Everything token-handler keeps beyond one request, in this process (`memory`) or shared
 * by the replicas (`redis`, when `session.redis` is configured). The one place that picks
 * the backend and owns its connections: a new kind of shared state is a port in ports.ts
 * and one implementation under memory/ and redis/.
 */
export interface SharedState {
  readonly backend: 'memory' | 'redis';
  /** Where session records live (`store: memory | redis`); absent for the cookie store. */
  readonly sessionStore?: SessionStore;
  /** Ended sessions whose cookie still carries the record (`store: cookie`). */
  readonly denylist?: Denylist;
  /** Identifiers refused a second time (logout-token `jti`s). */
  readonly seenOnce: SeenOnce;
  /** What happens to sessions (refreshed, slid, ended), told to every replica. */
  readonly signals: SessionSignals;
  /** One refresh per refresh token across replicas; absent with one process. */
  readonly refreshCoordinator?: RefreshCoordinator;
  /** Where rate limits count, when replicas share them. */
  readonly rateLimit?: { redis: StoreClient; nameSpace: string };
  /** How Redis is reached, and what its connection went through (metrics). */
  readonly redis?: { topology: RedisTopology; events: Readonly<ConnectionEvents> };
  /** Live sessions, where the backend can count them cheaply. */
  countSessions?(): Promise<number | undefined>;
  /** Readiness: whether the backend answers. */
  ping(): Promise<boolean>;
  /** Stops timers and closes every connection the state opened. */
  close(): Promise<void>;
}

/**
 * One Redis connection set for every app of the process (`session.redis` is process-wide):
 * the connection(s) and the local cache that reads through them. Each app's state is made
 * on it with a key prefix of its own (`createState({ shared, keyPrefix })`), so its keys,
 * session-signal channel and rate-limit counters never meet another app's.
 */
export interface SharedRedis {
  readonly connection: StoreConnection;
  readonly localCache: RedisTrackedCache | undefined;
  close(): Promise<void>;
}

/** Opens the process's Redis connection set (see SharedRedis). */
export function connectSharedRedis(config: NonNullable<SessionConfig['redis']>, logger: FastifyBaseLogger): SharedRedis {
  const connection = connectRedis(config, logger);
  const localCache = trackedCache(logger, config, connection.client);
  return {
    connection,
    localCache,
    close: async () => {
      localCache?.close();
      for (const client of [connection.client, connection.replicatedWrites]) await client?.quit().catch(() => client.disconnect());
    },
  };
}

export interface StateOptions {
  session: SessionConfig;
  /** The process's Redis connections, when several apps share them; the state then closes only its own parts. */
  shared?: SharedRedis;
  /** Prefix of this state's Redis keys; default session.redis.keyPrefix. */
  keyPrefix?: string;
  sealer: Sealer;
  /** How long a refresh result stays readable by replicas still holding the spent refresh token. */
  refreshResultTtlMs: number;
  /** Refresh lock life and the longest wait for another replica's refresh. */
  refreshLockTtlMs: number;
  refreshMaxWaitMs: number;
  now: () => number;
  logger: FastifyBaseLogger;
}

export function createState(options: StateOptions): SharedState {
  return options.session.redis ? redisState(options, options.session.redis) : memoryState(options);
}

function memoryState({ session, now }: StateOptions): SharedState {
  const lifetimeMs = session.absoluteTimeoutSeconds * 1000;
  const sessionStore = session.store === 'memory' ? new MemorySessionStore(now) : undefined;
  const denylist = session.store === 'cookie' ? new MemoryDenylist(lifetimeMs, now) : undefined;
  if (session.store === 'redis') throw new Error('session.store "redis" needs session.redis');
  return {
    backend: 'memory',
    ...(sessionStore ? { sessionStore, countSessions: () => sessionStore.count() } : {}),
    ...(denylist ? { denylist } : {}),
    seenOnce: new MemorySeenOnce(10_000, now),
    signals: new MemorySessionSignals(),
    ping: async () => true,
    close: async () => {
      await sessionStore?.close();
      await denylist?.close();
    },
  };
}

function redisState(options: StateOptions, config: NonNullable<SessionConfig['redis']>): SharedState {
  const { session, sealer, logger, shared } = options;
  const connection = shared?.connection ?? connectRedis(config, logger);
  const { client: redis } = connection;
  const keys = new KeyLayout(options.keyPrefix ?? config.keyPrefix, connection.topology === 'cluster');
  const lifetimeSeconds = session.absoluteTimeoutSeconds;
  const localCache = shared ? (session.store === 'memory' ? undefined : shared.localCache) : session.store === 'memory' ? undefined : trackedCache(logger, config, connection.client);
  const cached = localCache ? { localCache } : {};
  const sessionStore =
    session.store === 'redis'
      ? new RedisSessionStore({ redis, keys, sealer, absoluteTimeoutSeconds: lifetimeSeconds, ...cached, ...(localCache ? { verifiedEntries: config.localCacheEntries } : {}) })
      : undefined;
  const denylist = session.store === 'cookie' ? new RedisDenylist(redis, keys, lifetimeSeconds * 1000, localCache) : undefined;
  // A memory session store beside Redis: records stay in this process, coordination is shared.
  const memoryStore = session.store === 'memory' ? new MemorySessionStore(options.now) : undefined;
  const store = sessionStore ?? memoryStore;
  const signals = new RedisSessionSignals(redis, keys.signalsChannel, logger);
  return {
    backend: 'redis',
    ...(store ? { sessionStore: store } : {}),
    ...(memoryStore ? { countSessions: () => memoryStore.count() } : {}),
    ...(denylist ? { denylist } : {}),
    seenOnce: new RedisSeenOnce(redis, keys),
    signals,
    refreshCoordinator: new RedisRefreshCoordinator({
      redis,
      keys,
      sealer,
      resultTtlMs: options.refreshResultTtlMs,
      lockTtlMs: options.refreshLockTtlMs,
      maxWaitMs: options.refreshMaxWaitMs,
      pollIntervalMs: 10,
      now: Date.now,
      ...(connection.replicatedWrites ? { replicated: { client: connection.replicatedWrites, ackMs: LOCK_REPLICA_ACK_MS } } : {}),
    }),
    rateLimit: { redis, nameSpace: keys.rateLimitNamespace },
    redis: { topology: connection.topology, events: connection.events },
    ping: async () => {
      try {
        return (await redis.ping()) === 'PONG';
      } catch {
        return false;
      }
    },
    close: async () => {
      signals.close();
      await memoryStore?.close();
      // Shared connections are closed once, by their owner, after every app's state.
      if (shared) return;
      localCache?.close();
      for (const client of [redis, connection.replicatedWrites]) await client?.quit().catch(() => client.disconnect());
    },
  };
}

/**
 * The local cache, for the store that reads through it (Redis's tracking redirect is per
 * connection). Not on a Cluster: tracking there is per node, and a key's node changes
 * with every failover and resharding, which a redirect to one subscriber cannot follow.
 */
function trackedCache(logger: FastifyBaseLogger, config: NonNullable<SessionConfig['redis']>, redis: StoreClient): RedisTrackedCache | undefined {
  if (config.localCacheEntries === 0) return undefined;
  if (!(redis instanceof Redis)) {
    logger.info(
      'session.redis.cluster: the local session cache is off (client tracking is per node, and keys move between nodes on failover); every request reads Redis',
    );
    return undefined;
  }
  return new RedisTrackedCache({ redis, maxEntries: config.localCacheEntries, ttlMs: LOCAL_CACHE_TTL_MS, heartbeatMs: LOCAL_CACHE_HEARTBEAT_MS, logger });
}
