import { randomBytes } from 'node:crypto';
import { Cluster } from 'ioredis';
import { ProviderError } from '../../oidc/errors.js';
import type { TokenSet } from '../../oidc/token-set.js';
import type { Sealer } from '../sealer.js';
import { storeCall } from './client.js';
import type { StoreClient } from './connection.js';
import type { KeyLayout } from './keys.js';
import { type RefreshCoordinator } from '../ports.js';
import { TokenHandlerError } from '../../errors.js';

/** Deletes the lock only if we still own it (it may have expired and been taken by another replica). */
const RELEASE_IF_OWNER = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`;

/** After a write no replica acknowledged, how long replicated writes fail without asking. */
const UNREPLICATED_BACKOFF_MS = 1000;

/** Waiters look for another replica's result at growing intervals, up to this. */
const MAX_POLL_INTERVAL_MS = 250;

/** Extends the lock only if we still own it. */
const EXTEND_IF_OWNER = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
`;

export interface RedisRefreshCoordinatorOptions {
  redis: StoreClient;
  keys: KeyLayout;
  sealer: Sealer;
  /**
   * With replicas (Sentinel, Cluster): the connection for locks and results, and how long
   * one may take to reach a replica (WAIT 1) before it counts. A failover promotes a
   * replica, and a lock only the old master held would be lost with it: another replica
   * could then spend the same token.
   */
  replicated?: { client: StoreClient; ackMs: number };
  /** How long a refresh result stays readable by replicas that still hold the old refresh token. */
  resultTtlMs: number;
  /**
   * Lock expiry: a replica that dies holding the lock blocks the session at most this
   * long. A live holder extends it every third of that for as long as its refresh runs,
   * so a slow provider never lets a second replica spend the same refresh token.
   */
  lockTtlMs: number;
  /** The longest a waiter keeps waiting for another replica's refresh. */
  maxWaitMs: number;
  /** How often waiters look for the result (polling: see README "Stores and scale-out" for the measurement). */
  pollIntervalMs: number;
  now: () => number;
}

/**
 * One refresh per refresh token across all replicas sharing Redis: `SET NX PX` with an
 * owner token, a compare-and-delete release, and a sealed result record keyed by the
 * spent refresh token's hash that waiters (and later requests with the old cookie) pick
 * up instead of refreshing again. An `invalid_grant` outcome is remembered briefly too,
 * so waiters do not retry a dead token.
 */
export class RedisRefreshCoordinator implements RefreshCoordinator {
  /** Until when replicated writes fail without asking (a replica was just missing). */
  private unreplicatedUntil = 0;
  /** The replicated write in progress, which the next one waits for. */
  private replicatedWrites: Promise<unknown> = Promise.resolve();

  constructor(private readonly options: RedisRefreshCoordinatorOptions) {}

  private resultKey(key: string): string {
    return this.options.keys.refreshResult(key);
  }

  private lockKey(key: string): string {
    return this.options.keys.refreshLock(key);
  }

  /** The tokens a finished refresh of this key obtained, while its result is kept (throws ProviderError when it was refused). */
  async remembered(key: string): Promise<TokenSet | null> {
    const sealed = await storeCall('refresh result read', () => this.options.redis.get(this.resultKey(key)));
    return this.open(sealed);
  }

  private async open(sealed: string | null): Promise<TokenSet | null> {
    if (sealed === null) return null;
    const outcome = await this.options.sealer.unseal<StoredOutcome>(sealed);
    if (!outcome) return null;
    if ('failed' in outcome) throw new ProviderError('invalid_grant', 'refresh token already rejected by the provider (seen by another replica)');
    return outcome.tokens;
  }

  async coordinate(key: string, refresh: () => Promise<TokenSet>): Promise<TokenSet> {
    const { redis, pollIntervalMs, lockTtlMs, now } = this.options;
    const deadline = now() + Math.max(this.options.maxWaitMs, lockTtlMs * 2);
    while (now() < deadline) {
      const done = await this.remembered(key);
      if (done) return done;
      const owner = randomBytes(16).toString('base64url');
      if (await storeCall('refresh lock', () => this.lock(key, owner))) return this.refreshHoldingLock(key, owner, refresh);
      // Another replica is refreshing: wait for its result, or for its lock to go away.
      // One round trip per look, and looks grow sparser: a refresh usually lands within
      // the first few, and a thousand sessions refreshing at once must not flood Redis.
      for (let interval = pollIntervalMs; now() < deadline; interval = Math.min(interval * 1.5, MAX_POLL_INTERVAL_MS)) {
        await sleep(interval);
        const [sealed, lock] = await storeCall('refresh result read', () => redis.mget(this.resultKey(key), this.lockKey(key)));
        const result = await this.open(sealed ?? null);
        if (result) return result;
        if (lock === null) break;
      }
    }
    throw new ProviderError('transient', 'timed out waiting for another replica to refresh this session');
  }

  /**
   * Takes the lock (true) or finds it taken (false). With replicas, the lock counts only
   * once one replica has it too; otherwise it is released again and the request gets 503,
   * as it would during the failover that could lose it.
   */
  private async lock(key: string, owner: string): Promise<boolean> {
    const { redis, lockTtlMs } = this.options;
    try {
      if (!this.options.replicated) return (await redis.set(this.lockKey(key), owner, 'PX', lockTtlMs, 'NX')) === 'OK';
      return (await this.replicatedSet(this.lockKey(key), owner, lockTtlMs, 'NX')) === 'OK';
    } catch (err) {
      // The lock may have been taken with its answer lost (the connection dropped): left
      // alone it would hold every replica off this session until it expires.
      void this.releaseEventually(key, owner);
      throw err;
    }
  }

  private async refreshHoldingLock(key: string, owner: string, refresh: () => Promise<TokenSet>): Promise<TokenSet> {
    const { redis, lockTtlMs } = this.options;
    const heartbeat = setInterval(() => {
      redis.eval(EXTEND_IF_OWNER, 1, this.lockKey(key), owner, lockTtlMs).catch(() => {
        // Redis gone: nobody else can take the lock either.
      });
    }, Math.max(100, Math.floor(lockTtlMs / 3)));
    const unlock = () => {
      clearInterval(heartbeat);
      return this.releaseEventually(key, owner);
    };
    let tokens: TokenSet;
    try {
      // It may have finished between our look and our lock.
      const done = await this.remembered(key);
      if (done) {
        void unlock();
        return done;
      }
      tokens = await refresh();
    } catch (err) {
      if (err instanceof ProviderError && err.kind === 'invalid_grant') await this.store(key, { failed: 'invalid_grant' }, 10_000).catch(() => undefined);
      void unlock();
      throw err;
    }
    // The refresh token is spent: its result must reach Redis even through a failover, or
    // the next request would spend it again. Until it does, the lock stays (extended).
    void this.storeResult(key, tokens).finally(unlock);
    return tokens;
  }

  /** Writes a refresh's result, retrying while Redis is away (a failover), for at most maxWaitMs. */
  private async storeResult(key: string, tokens: TokenSet): Promise<void> {
    const deadline = this.options.now() + this.options.maxWaitMs;
    for (;;) {
      try {
        return await this.store(key, { tokens }, this.options.resultTtlMs);
      } catch {
        if (this.options.now() >= deadline) return;
        await sleep(100);
      }
    }
  }

  /** Releases our lock; false when Redis could not be asked (the lock then expires by itself after lockTtlMs). */
  private release(key: string, owner: string): Promise<boolean> {
    return this.options.redis.eval(RELEASE_IF_OWNER, 1, this.lockKey(key), owner).then(
      () => true,
      () => false,
    );
  }

  /** Releases our lock once Redis answers again (through a failover or a restart), for as long as the lock could live. */
  private async releaseEventually(key: string, owner: string): Promise<void> {
    const deadline = this.options.now() + this.options.lockTtlMs;
    while (!(await this.release(key, owner)) && this.options.now() < deadline) await sleep(100);
  }

  /**
   * Writes a result. With replicas, only a write one replica has acknowledged counts: a
   * master that a failover is demoting still accepts writes, which are then discarded, and
   * the retry (storeResult) must reach the new master instead.
   */
  private async store(key: string, outcome: StoredOutcome, ttlMs: number): Promise<void> {
    const { redis } = this.options;
    const sealed = await this.options.sealer.seal(outcome, Math.ceil(ttlMs / 1000) + 1);
    await storeCall('refresh result write', async () => {
      if (!this.options.replicated) await redis.set(this.resultKey(key), sealed, 'PX', ttlMs);
      else await this.replicatedSet(this.resultKey(key), sealed, ttlMs);
    });
  }

  /**
   * SET (NX) then WAIT 1 in one pipeline, on the connection kept for them (WAIT must run on
   * the node that took the write). 'OK', or null when NX found the key taken; throws when
   * no replica acknowledged. After such a miss, writes fail at once for a moment: a master
   * without a replica in sync (just after a failover) must not cost every refresh a wait.
   * The retry of a result (storeResult) then lands once a replica is back.
   */
  private replicatedSet(key: string, value: string, ttlMs: number, nx?: 'NX'): Promise<'OK' | null> {
    // One at a time: WAITs queued behind each other on the connection would each wait out
    // their timeout when no replica answers; in turn, the first miss lets the rest fail fast.
    const turn = this.replicatedWrites.then(() => this.replicatedSetNow(key, value, ttlMs, nx));
    this.replicatedWrites = turn.catch(() => undefined);
    return turn;
  }

  private async replicatedSetNow(key: string, value: string, ttlMs: number, nx?: 'NX'): Promise<'OK' | null> {
    const { client, ackMs } = this.options.replicated!;
    if (Date.now() < this.unreplicatedUntil) {
      // A result is still written, for waiters on this master to see; a lock is not taken.
      if (!nx) await client.set(key, value, 'PX', ttlMs);
      throw new NotReplicatedError('a refresh write');
    }
    const set = nx ? client.pipeline().set(key, value, 'PX', ttlMs, nx) : client.pipeline().set(key, value, 'PX', ttlMs);
    const [[writeError, written] = [], [waitError, acked] = []] = (await set.call('WAIT', 1, ackMs).exec()) ?? [];
    if (writeError) {
      // ioredis follows a MOVED in a pipeline only when every command got it; WAIT (run on
      // the demoted node) fails otherwise: the slots must be learned again by hand.
      if (client instanceof Cluster) client.refreshSlotsCache();
      throw writeError;
    }
    if (written !== 'OK') return null;
    if (waitError || Number(acked) < 1) {
      this.unreplicatedUntil = Date.now() + UNREPLICATED_BACKOFF_MS;
      throw new NotReplicatedError('a refresh write', waitError ?? undefined);
    }
    return 'OK';
  }
}

/** A write (a refresh lock, a result) did not reach a replica in time: a failover could lose it, so it does not count. */
export class NotReplicatedError extends TokenHandlerError {
  readonly code = 'ERR_TH_NOT_REPLICATED';

  constructor(what: string, cause?: unknown) {
    super(`${what} not acknowledged by a replica`, { cause });
  }
}

type StoredOutcome = { tokens: TokenSet } | { failed: 'invalid_grant' };

function sleep(ms: number): Promise<void> {
  // Unreferenced: a result still being retried never keeps a closing process alive.
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}
