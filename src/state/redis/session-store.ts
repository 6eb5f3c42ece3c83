import type { ChainableCommander } from 'ioredis';
import type { Sealer } from '../sealer.js';
import type { SessionStore, UpdateOutcome } from '../ports.js';
import type { RedisTrackedCache } from './tracked-cache.js';
import type { Awaitable } from '../../awaitable.js';
import { inSlots, storeCall } from './client.js';
import { BoundedTtlCache } from '../bounded-cache.js';
import { ironTail } from '../iron.js';
import type { StoreClient } from './connection.js';
import type { KeyLayout } from './keys.js';
import { type SessionRecord, tokenVersion } from '../record.js';

/**
 * Updates a live session: nothing when the key is gone (the session ended: logout, an
 * expiry, a back-channel logout — a late write must not bring it back), nothing when the
 * stored record is newer (a request that loaded the session before a refresh must not
 * write spent tokens back). Atomic, and one key, so Redis Cluster is fine (and after a
 * failover that lost a newer write, an older record still never replaces a newer one).
 * The sealed record's own `lastSeenAt` is that of this write (field `s` may hold a later slide).
 * Field `i` holds the record's back-channel logout identity (its sid and sub): most updates
 * (refreshes) leave it alone, and only a changed one makes the caller rewrite the index sets
 * (which may live in other Cluster slots).
 * Answers 2 written and the identity changed, 1 written, 0 stale, -1 ended.
 */
const UPDATE_IF_LIVE = `
local current = redis.call('HGET', KEYS[1], 'v')
if not current then return -1 end
if tonumber(current) > tonumber(ARGV[1]) then return 0 end
local identity = redis.call('HGET', KEYS[1], 'i')
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'd', ARGV[2], 'i', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if identity == ARGV[4] then return 1 end
return 2
`;

/**
 * An idle-timeout slide: field `s` (the last use, epoch ms) and the TTL move, the sealed
 * record stays; a slide older than the one stored changes nothing. Answers 1, or -1 when
 * the session ended. Reads take the later of `s` and the sealed record's `lastSeenAt`.
 */
const SLIDE_IF_LIVE = `
if not redis.call('HGET', KEYS[1], 'v') then return -1 end
local seen = redis.call('HGET', KEYS[1], 's')
if seen and tonumber(seen) > tonumber(ARGV[1]) then return 1 end
redis.call('HSET', KEYS[1], 's', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
`;

/** Deletes a session and answers the record it held last, in one step. */
const TAKE = `
local sealed = redis.call('HGET', KEYS[1], 'd')
redis.call('DEL', KEYS[1])
return sealed
`;

const UPDATE_OUTCOMES: Record<number, UpdateOutcome> = { 2: 'written', 1: 'written', 0: 'stale', [-1]: 'ended' };
const IDENTITY_CHANGED = 2;

export interface RedisSessionStoreOptions {
  redis: StoreClient;
  keys: KeyLayout;
  sealer: Sealer;
  /** Index entries live as long as a session may. */
  absoluteTimeoutSeconds: number;
  /**
   * Records kept in this process, invalidated by Redis on any change (see
   * tracked-cache.ts), so a busy session's requests do not each wait for Redis.
   */
  localCache?: RedisTrackedCache;
  /** Sessions whose last seal this replica read or wrote is kept, to skip decrypting it again (see `opened`). */
  verifiedEntries?: number;
}

/**
 * Sessions in Redis. Each record is sealed with the session secrets, so a dump of Redis
 * reveals no token. TTL = idle timeout (sliding, set on every write, never past the
 * absolute end: the caller computes it). Sets of session ids by provider `sid` and by
 * `sub` serve back-channel logout. Each key is written alone or in its own slot's
 * pipeline (keys.ts): the record and its index entries may live on different Cluster nodes.
 */
export class RedisSessionStore implements SessionStore {
  /**
   * Per session key, the tail of the last seal this replica read or wrote there (HMAC salt
   * and HMAC) and its record. The local cache re-reads a key after every change — this
   * replica's own idle-timeout slides included, once a minute per session — and after its
   * entries' time-to-live; a seal read back unchanged then costs no decryption. Comparing the
   * tail is enough for a value read from the same key: equal salt and HMAC mean the HMAC
   * verified before covers the same content. Kept apart from the sealer's unseal cache, which
   * compares whole seals because a cookie comes from the browser.
   */
  private readonly opened: BoundedTtlCache<{ tail: string; record: SessionRecord }> | undefined;

  constructor(private readonly options: RedisSessionStoreOptions) {
    if (options.verifiedEntries) this.opened = new BoundedTtlCache(options.verifiedEntries, options.absoluteTimeoutSeconds * 1000, Date.now);
  }

  /** Synchronous when the record is in the local cache. */
  get(id: string): Awaitable<SessionRecord | null> {
    const key = this.options.keys.session(id);
    const { localCache } = this.options;
    return localCache ? localCache.read(key, () => this.fetch(key)) : this.fetch(key);
  }

  private async fetch(key: string): Promise<SessionRecord | null> {
    const [sealed, seen] = await storeCall('get', () => this.options.redis.hmget(key, 'd', 's'));
    if (!sealed) return null;
    const record = this.opening(key, sealed);
    const lastSeenAt = Number(seen);
    return record && lastSeenAt > record.lastSeenAt ? { ...record, lastSeenAt } : record;
  }

  /** The record of a seal read from `key`: decrypted unless it is the one last read or written there. */
  private opening(key: string, sealed: string): SessionRecord | null {
    const tail = ironTail(sealed);
    const known = this.opened?.get(key);
    if (known?.tail === tail) return known.record;
    // The local cache keeps the record; the unseal cache is left to the cookies.
    const record = this.options.sealer.unseal<SessionRecord>(sealed, !this.options.localCache);
    if (record) this.opened?.set(key, { tail, record });
    return record;
  }

  async create(record: SessionRecord, ttlSeconds: number): Promise<void> {
    const { redis, sealer, absoluteTimeoutSeconds } = this.options;
    const key = this.options.keys.session(record.id);
    const sealed = await sealer.seal(record, absoluteTimeoutSeconds);
    const write = (pipeline: ChainableCommander) => pipeline.hset(key, 'v', tokenVersion(record), 'd', sealed, 'i', identityOf(record)).pexpire(key, ttlSeconds * 1000);
    await storeCall('create', () => this.written(key, () => inSlots(redis, [write, ...this.index(record)])));
    this.opened?.set(key, { tail: ironTail(sealed), record });
  }

  async update(record: SessionRecord, ttlSeconds: number): Promise<UpdateOutcome> {
    const { redis, sealer, absoluteTimeoutSeconds } = this.options;
    const key = this.options.keys.session(record.id);
    const sealed = await sealer.seal(record, absoluteTimeoutSeconds);
    return storeCall('update', async () => {
      const answer = Number(await this.written(key, () => redis.eval(UPDATE_IF_LIVE, 1, key, tokenVersion(record), sealed, ttlSeconds * 1000, identityOf(record))));
      // A refreshed ID token may name another provider session (sid) or, in theory, user.
      if (answer === IDENTITY_CHANGED) await inSlots(redis, this.index(record));
      const outcome = UPDATE_OUTCOMES[answer] ?? 'ended';
      if (outcome === 'written') this.opened?.set(key, { tail: ironTail(sealed), record });
      return outcome;
    });
  }

  async slide(id: string, lastSeenAt: number, ttlSeconds: number): Promise<'written' | 'ended'> {
    const key = this.options.keys.session(id);
    const answer = await storeCall('slide', () => this.written(key, () => this.options.redis.eval(SLIDE_IF_LIVE, 1, key, lastSeenAt, ttlSeconds * 1000)));
    return Number(answer) === 1 ? 'written' : 'ended';
  }

  async delete(id: string): Promise<SessionRecord | null> {
    const { redis, sealer } = this.options;
    const key = this.options.keys.session(id);
    this.opened?.delete(key);
    const sealed = await storeCall('delete', () => this.written(key, () => redis.eval(TAKE, 1, key) as Promise<string | null>));
    const record = sealed === null ? null : await sealer.unseal<SessionRecord>(sealed);
    if (record) {
      const removals = indexEntries(record).map(([kind, value]) => (pipeline: ChainableCommander) => pipeline.srem(this.options.keys.index(kind, value), id));
      await storeCall('delete', () => inSlots(redis, removals));
    }
    return record;
  }

  /** A write to a session key, through the local cache when there is one (it drops its copy first). */
  private written<T>(key: string, write: () => Promise<T>): Promise<T> {
    const { localCache } = this.options;
    return localCache ? localCache.writing(key, write) : write();
  }

  /** The back-channel logout index entries of a record, one pipeline group per index key. */
  private index(record: SessionRecord): Array<(pipeline: ChainableCommander) => void> {
    const ttl = this.options.absoluteTimeoutSeconds * 1000;
    return indexEntries(record).map(([kind, value]) => {
      const key = this.options.keys.index(kind, value);
      return (pipeline: ChainableCommander) => pipeline.sadd(key, record.id).pexpire(key, ttl);
    });
  }

  findBySid(sid: string): Promise<string[]> {
    return storeCall('findBySid', () => this.options.redis.smembers(this.options.keys.index('sid', sid)));
  }

  findBySub(sub: string): Promise<string[]> {
    return storeCall('findBySub', () => this.options.redis.smembers(this.options.keys.index('sub', sub)));
  }

  /** Counting would mean a SCAN over the keyspace: not offered. */
  async count(): Promise<undefined> {
    return undefined;
  }
}

/** What the index sets hold this record under, as one comparable string. */
function identityOf(record: SessionRecord): string {
  return JSON.stringify(indexEntries(record));
}

function indexEntries(record: SessionRecord): Array<['sid' | 'sub', string]> {
  const entries: Array<['sid' | 'sub', string]> = [];
  if (typeof record.claims.sid === 'string') entries.push(['sid', record.claims.sid]);
  if (typeof record.claims.sub === 'string') entries.push(['sub', record.claims.sub]);
  return entries;
}
