import type { FastifyBaseLogger } from 'fastify';
import type { SessionManager } from './manager.js';
import { sessionExpiry, type SessionTimeouts } from './record.js';
import { signalMatches } from './signals.js';
import type { SessionEndKind, SessionSignal, SessionSignals } from '../state/ports.js';
import { sessionHash, type SessionRecord } from '../state/record.js';

/** Why token-handler ends a channel: its session ended, its token expired, or the server is going away. */
export type ChannelEnd = 'session_ended' | 'token_expired' | 'shutdown';

/** What a channel that wants to know is told about its session while it lives. */
export type ChannelNotice = { type: 'refreshed'; accessTokenExpiresAt: number } | { type: 'expiring'; idleExpiresAt: number };

/** How long before the idle timeout an `expiring` notice is given. */
const EXPIRING_NOTICE_MS = 60_000;

/**
 * A long-lived channel of a session: a proxied WebSocket, a streamed response, or a
 * `/auth/events` stream.
 */
export interface Channel {
  readonly kind: 'socket' | 'stream' | 'events';
  /** Epoch ms (on the app's clock) after which it ends with `token_expired`; undefined: never. */
  readonly expiresAt?: number | undefined;
  /**
   * Ends it (closes the socket with the code of `why`, or destroys the stream). Called once.
   * `reason` says how the session ended, when it did.
   */
  end(why: ChannelEnd, reason?: SessionEndKind): void;
  /** Refreshes of the session, and its idle timeout drawing near (once per slide). */
  notify?(notice: ChannelNotice): void;
}

interface SessionEntry {
  /** The registry's view of the session: `lastSeenAt` follows the `touched` and `refreshed` signals. */
  record: SessionRecord;
  /** A cookie value of the session, to ask the store whether it still lives. */
  cookieValue: string;
  channels: Set<Channel>;
  rereading: boolean;
  /** Channels told the idle timeout is near, since the session last slid. */
  warned: Set<Channel>;
}

export interface SessionChannelsOptions {
  signals: SessionSignals;
  sessions: SessionManager;
  timeouts: SessionTimeouts;
  now: () => number;
  logger: FastifyBaseLogger;
  /** How often the idle and absolute timeouts and channel expiries are looked at (default 1000 ms). */
  tickMs?: number;
}

/**
 * The long-lived channels (WebSockets, streamed responses) open on this replica, by
 * session. It listens to the session signals every replica hears (`SessionManager`
 * publishes `ended` for every way a session ends: logout, back-channel logout, a refused
 * refresh, `/auth/sessions`, an operator), so a session ended anywhere ends its channels
 * here within the signal's delivery time. Idle and absolute timeouts, which nobody
 * announces, are found by a ticker; the store has the last word before a channel is ended
 * for them (its view of the idle timeout may be behind a slide on another replica).
 *
 * Channel traffic itself does not count as use of the session: the idle timeout slides
 * with the browser's HTTP calls only, so an open dashboard does not keep a session alive
 * forever (docs/contracts.md "WebSockets").
 */
export class SessionChannels {
  private readonly entries = new Map<string, SessionEntry>();
  private unsubscribe: (() => void) | undefined;
  private ticker: NodeJS.Timeout | undefined;
  private readonly tickMs: number;

  constructor(private readonly options: SessionChannelsOptions) {
    this.tickMs = options.tickMs ?? 1000;
  }

  /** Subscribes to the signals now rather than at the first channel (so the first one misses nothing). */
  start(): void {
    this.unsubscribe ??= this.options.signals.subscribe((signal) => this.heard(signal));
  }

  /** Open channels of a kind for a session (by its hash). */
  count(hash: string, kind: Channel['kind']): number {
    const entry = this.entries.get(hash);
    if (!entry) return 0;
    let n = 0;
    for (const channel of entry.channels) if (channel.kind === kind) n++;
    return n;
  }

  /** Open channels of every session. */
  get size(): number {
    let n = 0;
    for (const entry of this.entries.values()) n += entry.channels.size;
    return n;
  }

  /** Registers a channel of a session; returns its removal (call it when the channel closes by itself). */
  add(record: SessionRecord, cookieValue: string, channel: Channel): () => void {
    this.start();
    const hash = sessionHash(record);
    let entry = this.entries.get(hash);
    if (!entry) {
      entry = { record, cookieValue, channels: new Set(), rereading: false, warned: new Set() };
      this.entries.set(hash, entry);
    } else if (record.lastSeenAt > entry.record.lastSeenAt) {
      entry.record = record;
      entry.cookieValue = cookieValue;
    }
    entry.channels.add(channel);
    this.ticker ??= setInterval(() => this.tick(), this.tickMs).unref();
    const added = entry;
    return () => this.remove(hash, added, channel);
  }

  /** Ends every channel (shutdown). */
  endAll(why: ChannelEnd): void {
    for (const [hash, entry] of [...this.entries]) this.endSession(hash, entry, why);
    this.stopTickerWhenIdle();
  }

  close(): void {
    this.unsubscribe?.();
    this.unsubscribe = undefined;
    if (this.ticker) clearInterval(this.ticker);
    this.ticker = undefined;
  }

  private remove(hash: string, entry: SessionEntry, channel: Channel): void {
    entry.channels.delete(channel);
    entry.warned.delete(channel);
    if (entry.channels.size === 0 && this.entries.get(hash) === entry) this.entries.delete(hash);
    this.stopTickerWhenIdle();
  }

  private stopTickerWhenIdle(): void {
    if (this.entries.size === 0 && this.ticker) {
      clearInterval(this.ticker);
      this.ticker = undefined;
    }
  }

  private endSession(hash: string, entry: SessionEntry, why: ChannelEnd, reason?: SessionEndKind): void {
    if (this.entries.get(hash) === entry) this.entries.delete(hash);
    for (const channel of [...entry.channels]) this.endChannel(channel, why, reason);
    entry.channels.clear();
  }

  private endChannel(channel: Channel, why: ChannelEnd, reason?: SessionEndKind): void {
    try {
      channel.end(why, reason);
    } catch (err) {
      this.options.logger.warn({ err: err instanceof Error ? err.message : String(err) }, 'a session channel failed to end');
    }
  }

  private notifyAll(channels: Iterable<Channel>, notice: ChannelNotice): void {
    for (const channel of channels) {
      try {
        channel.notify?.(notice);
      } catch (err) {
        this.options.logger.warn({ err: err instanceof Error ? err.message : String(err) }, 'a session channel failed to take a notice');
      }
    }
  }

  /** The session was used later than the registry knew: the idle timeout moved, warnings start over. */
  private slid(entry: SessionEntry, lastSeenAt: number): void {
    if (lastSeenAt <= entry.record.lastSeenAt) return;
    entry.record = { ...entry.record, lastSeenAt };
    entry.warned.clear();
  }

  private heard(signal: SessionSignal): void {
    if (this.entries.size === 0) return;
    for (const [hash, entry] of [...this.entries]) {
      if (!signalMatches(signal.match, entry.record, hash)) continue;
      if (signal.kind === 'ended') {
        this.endSession(hash, entry, 'session_ended', signal.reason);
        this.stopTickerWhenIdle();
        continue;
      }
      this.slid(entry, signal.lastSeenAt);
      if (signal.kind === 'refreshed') this.notifyAll(entry.channels, { type: 'refreshed', accessTokenExpiresAt: signal.accessTokenExpiresAt });
    }
  }

  private tick(): void {
    const at = this.options.now();
    for (const [hash, entry] of [...this.entries]) {
      for (const channel of entry.channels) {
        if (channel.expiresAt !== undefined && channel.expiresAt <= at) {
          entry.channels.delete(channel);
          this.endChannel(channel, 'token_expired');
        }
      }
      if (entry.channels.size === 0) {
        this.entries.delete(hash);
        continue;
      }
      // Within a minute of the idle end, or past it, as far as the registry knows.
      const expired = sessionExpiry(entry.record, at, this.options.timeouts);
      if (expired || this.unwarnedNearEnd(entry, at).length > 0) this.askStore(hash, entry);
    }
  }

  /**
   * The registry's view may be behind a slide it was not told of (another replica's; slides
   * of server-side stores are not broadcast): the store decides, before a warning and before
   * an end. A live session moves the view on, then warns if its end is still near.
   */
  private askStore(hash: string, entry: SessionEntry): void {
    if (entry.rereading) return;
    entry.rereading = true;
    void Promise.resolve(this.options.sessions.reread(entry.cookieValue)).then(
      (current) => {
        entry.rereading = false;
        const now = this.options.now();
        if (current && !sessionExpiry(current, now, this.options.timeouts)) {
          this.slid(entry, current.lastSeenAt);
          this.warnIfNear(entry, now);
        } else this.endSession(hash, entry, 'session_ended', 'timeout');
        this.stopTickerWhenIdle();
      },
      () => {
        // Store unavailable: asked again at the next tick.
        entry.rereading = false;
      },
    );
  }

  /** When the session ends by the registry's view: the idle end, never past the absolute one. */
  private idleEnd(entry: SessionEntry): number {
    const { idleTimeoutSeconds, absoluteTimeoutSeconds } = this.options.timeouts;
    return Math.min(entry.record.lastSeenAt + idleTimeoutSeconds * 1000, entry.record.createdAt + absoluteTimeoutSeconds * 1000);
  }

  /** Channels that asked to be told, not yet told, of an end within a minute. */
  private unwarnedNearEnd(entry: SessionEntry, at: number): Channel[] {
    if (this.idleEnd(entry) - at > EXPIRING_NOTICE_MS) return [];
    return [...entry.channels].filter((channel) => channel.notify && !entry.warned.has(channel));
  }

  /** Tells the channels that asked, once per slide, that the idle (or absolute) end is within a minute. */
  private warnIfNear(entry: SessionEntry, at: number): void {
    const unwarned = this.unwarnedNearEnd(entry, at);
    if (unwarned.length === 0) return;
    for (const channel of unwarned) entry.warned.add(channel);
    this.notifyAll(unwarned, { type: 'expiring', idleExpiresAt: this.idleEnd(entry) });
  }
}
