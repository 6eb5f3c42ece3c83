import { ReplyError, type Redis } from 'ioredis';
import type { FastifyBaseLogger } from 'fastify';
import type { Awaitable } from '../../awaitable.js';
import { BoundedTtlCache } from '../bounded-cache.js';

/** Where Redis publishes the names of tracked keys that changed (RESP2 redirect mode). */
const INVALIDATION_CHANNEL = '__redis__:invalidate';

export interface RedisTrackedCacheOptions {
  /** The connection whose reads are tracked (the one the store reads with). */
  redis: Redis;
  maxEntries: number;
  /** Entries are re-read after this, whatever else happens. */
  ttlMs: number;
  /**
   * How often the invalidation connection must answer a PING. One that has not answered
   * within this long turns the cache off until it answers again: a connection that went
   * silent without closing (a partition, no reset) may be losing invalidations. This, not
   * `ttlMs`, bounds how long a replica can serve a change it missed. 0: no heartbeat.
   */
  heartbeatMs?: number;
  logger: FastifyBaseLogger;
}

/**
 * Values read from Redis, kept in this process until Redis says their key changed:
 * Redis's server-assisted client-side caching (`CLIENT TRACKING ON REDIRECT`). Redis
 * remembers which keys the tracked connection read and, when any client (another replica
 * included) writes, deletes or expires one, publishes its name on a second connection
 * subscribed to `__redis__:invalidate`; the entry is dropped at once.
 *
 * Correctness rules (the Redis documentation's, for the two-connection mode):
 * - nothing is cached unless tracking is confirmed on for the current pair of connections;
 *   either connection dropping empties the cache and turns caching off until both are
 *   back and tracking is on again (a lost subscriber means lost invalidations);
 * - a read that overlapped an invalidation of its own key (or a tracking change) is not remembered: its
 *   reply may predate a write whose invalidation already arrived on the other connection;
 * - every entry also expires after `ttlMs`.
 * A Redis that refuses CLIENT TRACKING (older than 6, or the command disabled) leaves the
 * cache off, with one warning; every read then goes to Redis as before.
 */
export class RedisTrackedCache {
  /** Values as Redis returned them (null for a missing key); never undefined. */
  private readonly entries: BoundedTtlCache<unknown>;
  private readonly subscriber: Redis;
  private tracking = false;
  /**
   * Bumped by a whole-cache change (a flush, tracking switched on or off): a read spanning
   * one is not kept. An invalidation of one key marks only the reads of that key (below).
   */
  private epoch = 0;
  /**
   * Keys with a read in flight, and whether the key changed since such a read began: its
   * answer may then be stale and is not kept. Per key, so that other sessions' changes (a
   * slide every minute per session) do not keep a busy replica from caching anything.
   */
  private readonly reading = new Map<string, { reads: number; changed: boolean }>();
  /** Bumped when either connection drops: a tracking setup begun before it is void. */
  private connectionGeneration = 0;
  /** The subscriber connection's client id, while it is subscribed. */
  private subscriberClientId: number | undefined;
  private unsupported = false;
  private closed = false;
  /** The invalidation connection has not answered the heartbeat in time: caching stays off until it does. */
  private silent = false;
  private heartbeatInFlight = false;
  private readonly heartbeat: NodeJS.Timeout | undefined;

  constructor(private readonly options: RedisTrackedCacheOptions) {
    this.entries = new BoundedTtlCache<unknown>(options.maxEntries, options.ttlMs, Date.now);
    // Subscriptions are renewed by hand (CLIENT ID must be asked before subscribing).
    this.subscriber = options.redis.duplicate({ autoResubscribe: false, enableAutoPipelining: false });
    this.subscriber.on('messageBuffer', (_channel: Buffer, keys: unknown) => this.invalidate(keys));
    // The ioredis 'error' events are logged by the main connection's handler; the
    // subscriber's own are expected while Redis is away and carry nothing new.
    this.subscriber.on('error', () => undefined);
    this.subscriber.on('close', () => {
      this.subscriberClientId = undefined;
    });
    for (const connection of [options.redis, this.subscriber]) {
      connection.on('close', () => {
        this.connectionGeneration++;
        this.stopCaching();
        // Tracking is set up afresh once both are back: a silence of the old connection no longer applies.
        this.silent = false;
      });
      connection.on('ready', () => void this.startTracking());
    }
    if (options.redis.status === 'ready') void this.startTracking();
    if (options.heartbeatMs) this.heartbeat = setInterval(() => void this.beat(options.heartbeatMs!), options.heartbeatMs).unref();
  }

  /**
   * Asks the invalidation connection for a PING answer. No answer within `timeoutMs`: caching
   * off (entries dropped, reads in flight not kept). The answer arriving later (the network
   * healed, no invalidation can be missing from the dropped entries): tracking set up again.
   */
  private async beat(timeoutMs: number): Promise<void> {
    if (this.heartbeatInFlight || this.closed || this.subscriber.status !== 'ready' || this.subscriberClientId === undefined) return;
    this.heartbeatInFlight = true;
    const late = setTimeout(() => {
      if (this.silent || this.closed) return;
      this.silent = true;
      this.stopCaching();
      this.options.logger.warn({ waitedMs: timeoutMs }, 'Redis invalidation connection did not answer in time: the local session cache is off until it does');
    }, timeoutMs).unref();
    const answered = await this.subscriber.ping().then(
      () => true,
      () => false,
    );
    clearTimeout(late);
    this.heartbeatInFlight = false;
    if (answered && this.silent && !this.closed) {
      this.silent = false;
      this.options.logger.info('Redis invalidation connection answers again: the local session cache is back on');
      void this.startTracking();
    }
  }

  /**
   * The cached value, or the fetched one (cached when it is safe to). A key that does not
   * exist is cached too (as the fetch's null): Redis tracks reads of missing keys as well.
   */
  read<V>(key: string, fetch: () => Promise<V>): Awaitable<V> {
    if (this.tracking) {
      const cached = this.entries.get(key);
      if (cached !== undefined) return cached as V;
    }
    return this.remembered([key], fetch().then((value) => [value]), ([value]) => value as V);
  }

  /** Several keys read in one command (MGET): answered from the cache only when all of them are in it. */
  readMany<V>(keys: readonly string[], fetch: () => Promise<V[]>): Awaitable<V[]> {
    if (this.tracking) {
      const cached: V[] = [];
      for (const key of keys) {
        const value = this.entries.get(key);
        if (value === undefined) break;
        cached.push(value as V);
      }
      if (cached.length === keys.length) return cached;
    }
    return this.remembered(keys, fetch(), (values) => values);
  }

  /**
   * Caches what a read returned, unless tracking is off or something changed while it ran
   * (tracking being switched on bumps the epoch too, so a read begun without it is not kept).
   */
  private remembered<V, R>(keys: readonly string[], values: Promise<V[]>, result: (values: V[]) => R): Promise<R> {
    const epoch = this.epoch;
    const marks = keys.map((key) => {
      let mark = this.reading.get(key);
      if (!mark) {
        mark = { reads: 0, changed: false };
        this.reading.set(key, mark);
      }
      mark.reads++;
      return mark;
    });
    const done = () =>
      keys.forEach((key, i) => {
        const mark = marks[i]!;
        if (--mark.reads === 0 && this.reading.get(key) === mark) this.reading.delete(key);
      });
    return values.then(
      (fetched) => {
        const unchanged = this.tracking && epoch === this.epoch && marks.every((mark) => !mark.changed);
        done();
        if (unchanged) keys.forEach((key, i) => this.entries.set(key, fetched[i]));
        return result(fetched);
      },
      (err: unknown) => {
        done();
        throw err;
      },
    );
  }

  /** A key changed: drop it, and any read of it in flight is not kept. */
  private changed(key: string): void {
    this.entries.delete(key);
    const mark = this.reading.get(key);
    if (mark) mark.changed = true;
  }

  /**
   * Runs this process's own write (or delete) of a key, dropping the key before and after:
   * this process's next read sees the write without waiting for Redis's invalidation
   * message, which follows for the other replicas' caches.
   */
  writing<T>(key: string, write: () => Promise<T>): Promise<T> {
    this.evict(key);
    return write().finally(() => this.evict(key));
  }

  private evict(key: string): void {
    this.changed(key);
  }

  close(): void {
    this.closed = true;
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.stopCaching();
    this.subscriber.disconnect();
  }

  private invalidate(keys: unknown): void {
    // null: Redis flushed its tracking table (FLUSHALL, a full table): forget everything.
    if (!Array.isArray(keys)) {
      this.epoch++;
      this.entries.clear();
      return;
    }
    for (const key of keys) this.changed(String(key));
  }

  private stopCaching(): void {
    this.tracking = false;
    this.epoch++;
    this.entries.clear();
  }

  /** Subscribes and turns tracking on, once both connections are ready; re-run on every reconnect. */
  private async startTracking(): Promise<void> {
    const { redis, logger } = this.options;
    if (this.unsupported || this.closed || this.silent || redis.status !== 'ready' || this.subscriber.status !== 'ready') return;
    this.stopCaching();
    const generation = this.connectionGeneration;
    try {
      // A subscribed connection cannot answer CLIENT ID: ask first, then subscribe.
      if (this.subscriberClientId === undefined) {
        const id = Number(await this.subscriber.client('ID'));
        await this.subscriber.subscribe(INVALIDATION_CHANNEL);
        this.subscriberClientId = id;
      }
      await redis.call('CLIENT', 'TRACKING', 'ON', 'REDIRECT', String(this.subscriberClientId));
      // A connection that dropped meanwhile brings us back here when it is ready again.
      if (generation !== this.connectionGeneration || this.closed) return;
      this.epoch++;
      this.tracking = true;
    } catch (err) {
      // Redis answered with an error: it does not offer tracking (older than 6, or the
      // command is disabled). Anything else is a dropped connection, retried on 'ready'.
      if (err instanceof ReplyError) {
        this.unsupported = true;
        logger.warn({ err: (err as Error).message }, 'Redis refused CLIENT TRACKING: the local session cache is off, every request reads Redis');
      }
    }
  }
}
