import { randomBytes } from 'node:crypto';
import { andThen, type Awaitable } from '../awaitable.js';
import type { FastifyBaseLogger, FastifyReply, FastifyRequest } from 'fastify';
import type { SessionCookies } from './cookies.js';
import type { ProviderLogout, SessionPersistence } from './persistence.js';
import { sessionExpiry, type SessionTimeouts } from './record.js';
import type { LogoutReason, Metrics } from '../ops/metrics.js';
import { SessionEndedError, type SessionEndKind, type SessionSignal, type SessionSignals } from '../state/ports.js';
import { sessionHash, sessionHashOfId, type SessionRecord } from '../state/record.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** The session this request used, for the request log line (never logged itself). */
    session: SessionRecord | null;
  }
}

export interface SessionManagerOptions {
  metrics?: Metrics;
  cookies: SessionCookies;
  persistence: SessionPersistence;
  timeouts: SessionTimeouts;
  now: () => number;
  logger: FastifyBaseLogger;
  /** Told of every refresh, slide and end, on every replica (events, sockets). */
  signals?: SessionSignals;
}

/** A session as loaded for one request. */
export interface LoadedSession {
  record: SessionRecord;
  /** The cookie value it came from, to avoid re-sending an unchanged cookie. */
  cookieValue: string;
}

/** One idle-timeout slide: the touched record, and its cookie once written. */
interface Slide {
  record: SessionRecord;
  cookieValue: Promise<string>;
  written?: string;
}

/**
 * Why a session ended: the user's logout, a timeout, a refused grant, the provider's
 * back-channel logout, or another of the user's sessions or an operator ending it.
 */
export type SessionEndReason = 'user' | 'idle' | 'absolute' | 'invalid_grant' | 'backchannel' | 'elsewhere';

/**
 * Reads, writes and ends sessions: cookie handling, idle (sliding) and absolute
 * timeouts, and the store behind the cookie. A cookie that is tampered, truncated,
 * expired or foreign is treated as no session and cleared.
 */
export class SessionManager {
  /** Sliding the idle timeout writes the session (the cookie store: a new seal); do it at most this often. */
  private readonly touchIntervalMs: number;
  /** Idle-timeout slides by the loaded record they started from (see touch). */
  private readonly slides = new WeakMap<SessionRecord, Slide>();

  constructor(private readonly options: SessionManagerOptions) {
    this.touchIntervalMs = Math.min(60_000, (options.timeouts.idleTimeoutSeconds * 1000) / 10);
  }

  get cookies(): SessionCookies {
    return this.options.cookies;
  }

  newSessionId(): string {
    return randomBytes(18).toString('base64url');
  }

  /**
   * The request's session, or null. Clears the cookie of an unusable session on the
   * reply so the browser stops sending it. Synchronous when the store answers from memory.
   */
  load(request: FastifyRequest, reply: FastifyReply): Awaitable<LoadedSession | null> {
    const cookieValue = this.options.cookies.readSession(request);
    if (cookieValue === null) return null;
    return andThen(this.options.persistence.read(cookieValue), (record) => this.accept(request, reply, record, cookieValue));
  }

  /**
   * The request's usable session record, without touching the reply (nothing is cleared or
   * ended here: `load` does that when the request is handled). For checks that must come
   * before a request body is read: is there a session, does it satisfy the route's policy.
   */
  peek(request: FastifyRequest): Awaitable<SessionRecord | null> {
    const cookieValue = this.options.cookies.readSession(request);
    if (cookieValue === null) return null;
    return andThen(this.options.persistence.read(cookieValue), (record) =>
      record !== null && !sessionExpiry(record, this.options.now(), this.options.timeouts) ? record : null,
    );
  }

  private accept(request: FastifyRequest, reply: FastifyReply, record: SessionRecord | null, cookieValue: string): Awaitable<LoadedSession | null> {
    if (!record) {
      request.log.debug('session cookie present but not a valid session (tampered, expired, foreign or ended)');
      this.options.cookies.clearSession(request, reply);
      return null;
    }
    const expiry = sessionExpiry(record, this.options.now(), this.options.timeouts);
    if (expiry) return this.end(request, reply, record, expiry).then(() => null);
    request.session = record;
    return { record, cookieValue };
  }

  /**
   * Stores the record and sends the cookie when its value changed. `lastSeenAt` slides
   * here, at most once per touch interval, so a busy session is not re-sealed per request
   * (and such a request does not wait for anything).
   */
  save(request: FastifyRequest, reply: FastifyReply, record: SessionRecord, previous?: LoadedSession): Awaitable<SessionRecord> {
    const now = this.options.now();
    const touched = this.slideDue(record, now) ? { ...record, lastSeenAt: now } : record;
    request.session = touched;
    if (previous && touched === previous.record) return touched;
    return this.write(request, reply, touched, now, previous);
  }

  /** Whether the idle timeout is due to slide (at most once per touch interval). */
  private slideDue(record: SessionRecord, now: number): boolean {
    return now - record.lastSeenAt >= this.touchIntervalMs;
  }

  private async write(request: FastifyRequest, reply: FastifyReply, record: SessionRecord, now: number, previous?: LoadedSession): Promise<SessionRecord> {
    let cookieValue: string;
    try {
      cookieValue = await this.persist(record, now, previous);
    } catch (err) {
      throw this.refused(request, reply, err);
    }
    this.sendCookie(request, reply, record, cookieValue, now, previous);
    return record;
  }

  /** A write the store refused because the session ended meanwhile: the browser's cookie goes too. */
  private refused(request: FastifyRequest, reply: FastifyReply, err: unknown): unknown {
    if (err instanceof SessionEndedError) {
      request.session = null;
      this.options.cookies.clearSession(request, reply);
      request.log.info({ session: sessionHashOfId(err.sessionId) }, 'session ended while this request used it: nothing written back');
    }
    return err;
  }

  /**
   * A loaded session is written back only while it has not timed out: a refresh that
   * outlived the idle or absolute timeout must not slide a session nobody used meanwhile
   * (the store refuses sessions that ended any other way).
   */
  private persist(record: SessionRecord, now: number, previous?: LoadedSession): Promise<string> {
    if (previous && sessionExpiry(previous.record, now, this.options.timeouts)) return Promise.reject(new SessionEndedError(record.id));
    return this.options.persistence.write(record, this.remainingSeconds(record, now), previous?.cookieValue);
  }

  /** `persist` for a slide: `record` is `loaded`'s record with only `lastSeenAt` moved. */
  private persistSlide(record: SessionRecord, now: number, loaded: LoadedSession): Promise<string> {
    if (sessionExpiry(loaded.record, now, this.options.timeouts)) return Promise.reject(new SessionEndedError(record.id));
    return this.options.persistence.slide(record, this.remainingSeconds(record, now), loaded.cookieValue);
  }

  private sendCookie(request: FastifyRequest, reply: FastifyReply, record: SessionRecord, cookieValue: string, now: number, previous?: LoadedSession): void {
    if (cookieValue !== previous?.cookieValue) {
      this.options.cookies.writeSession(request, reply, cookieValue, this.cookieMaxAgeSeconds(record, now));
    }
  }

  /**
   * Slides the idle timeout of a loaded session if due; a no-op on most requests. The slide
   * is written once per loaded record: until the browser has the new cookie, its requests
   * (parallel calls already on their way; a client without a cookie jar, for good) carry the
   * old one, and each used to write — for the cookie store, re-seal — the session again. They
   * share the first one's write and get its cookie.
   */
  touch(request: FastifyRequest, reply: FastifyReply, loaded: LoadedSession): Awaitable<SessionRecord> {
    const now = this.options.now();
    if (!this.slideDue(loaded.record, now)) {
      request.session = loaded.record;
      return loaded.record;
    }
    let slide = this.slides.get(loaded.record);
    if (!slide || this.slideDue(slide.record, now)) {
      const record = { ...loaded.record, lastSeenAt: now };
      const started: Slide = { record, cookieValue: this.persistSlide(record, now, loaded) };
      started.cookieValue.then(
        (value) => {
          started.written = value;
          const touched: SessionSignal = { kind: 'touched', match: { sessionHash: sessionHash(record) }, lastSeenAt: now };
          // A server-side store holds the slide for every replica to read: no broadcast per slide.
          // A cookie-store slide lives only in the new cookie, which other replicas never see.
          if (this.options.persistence.kind === 'cookie') this.signal(touched, request.log);
          else this.options.signals?.tellThisReplica(touched);
        },
        () => this.slides.delete(loaded.record),
      );
      this.slides.set(loaded.record, started);
      slide = started;
    }
    const { record, written } = slide;
    request.session = record;
    if (written === undefined) {
      return slide.cookieValue.then(
        (value) => {
          this.sendCookie(request, reply, record, value, now, loaded);
          return record;
        },
        (err: unknown) => {
          throw this.refused(request, reply, err);
        },
      );
    }
    this.sendCookie(request, reply, record, written, now, loaded);
    return record;
  }

  /**
   * Ends the session everywhere (record deleted or denylisted), clears the cookie, logs one
   * line with the reason. Returns the record the store held last (server-side stores), whose
   * tokens may be newer than `record`'s when another request refreshed meanwhile.
   */
  async end(request: FastifyRequest, reply: FastifyReply, record: SessionRecord, reason: SessionEndReason): Promise<SessionRecord | null> {
    this.options.cookies.clearSession(request, reply);
    request.session = null;
    return this.endSession(record, reason, request.log);
  }

  /** The session behind a cookie value as the store has it now (null once it ended). */
  reread(cookieValue: string): Awaitable<SessionRecord | null> {
    return this.options.persistence.read(cookieValue);
  }

  /** Ends a session that is not this request's (another of the user's, an operator's choice). */
  async endSession(record: SessionRecord, reason: SessionEndReason, log: FastifyBaseLogger): Promise<SessionRecord | null> {
    const last = await this.options.persistence.remove(record);
    this.options.metrics?.logout(logReason(reason));
    log.info({ session: sessionHash(record), reason: logReason(reason), ...(reason === 'idle' || reason === 'absolute' ? { timeout: reason } : {}) }, 'session ended');
    this.signal({ kind: 'ended', match: { sessionHash: sessionHash(record) }, reason: endKind(reason) }, log);
    return last;
  }

  /** Ends every session of a provider session (`sid`), or all of a user's (`sub` only). */
  async endProviderSessions(match: ProviderLogout, log: FastifyBaseLogger, reason: 'backchannel' | 'elsewhere' = 'backchannel'): Promise<number | undefined> {
    const at = this.options.now();
    const ended = await this.options.persistence.endMatching(match, at);
    this.options.metrics?.logout(logReason(reason), ended ?? 1);
    log.info({ reason: logReason(reason), byProviderSession: match.sid !== undefined, sessions: ended ?? 'denylisted' }, 'session ended');
    const signalMatch = match.sid !== undefined ? { sid: match.sid } : { sub: match.sub!, createdBefore: at };
    this.signal({ kind: 'ended', match: signalMatch, reason: endKind(reason) }, log);
    return ended;
  }

  /** Tells every replica; a signal that cannot be sent (Redis away) never fails the request. */
  signal(signal: SessionSignal, log: FastifyBaseLogger): void {
    this.options.signals?.publish(signal).catch((err: unknown) => log.warn({ err: err instanceof Error ? err.message : String(err), signal: signal.kind }, 'session signal not sent'));
  }

  /** Server-side lifetime: the idle window, never past the absolute end. */
  private remainingSeconds(record: SessionRecord, now: number): number {
    const { idleTimeoutSeconds, absoluteTimeoutSeconds } = this.options.timeouts;
    const absoluteLeft = record.createdAt + absoluteTimeoutSeconds * 1000 - now;
    return Math.max(1, Math.ceil(Math.min(idleTimeoutSeconds * 1000, absoluteLeft) / 1000));
  }

  /** The browser may keep the cookie until the absolute end; idle expiry is enforced server-side. */
  private cookieMaxAgeSeconds(record: SessionRecord, now: number): number {
    const absoluteLeft = record.createdAt + this.options.timeouts.absoluteTimeoutSeconds * 1000 - now;
    return Math.max(1, Math.ceil(absoluteLeft / 1000));
  }
}

/** The reasons operators see: user, backchannel, expired, invalid_grant, revoked. */
function logReason(reason: SessionEndReason): LogoutReason {
  if (reason === 'idle' || reason === 'absolute') return 'expired';
  return reason === 'elsewhere' ? 'revoked' : reason;
}

/** The reasons the browser is told (`/auth/events`, socket close reasons). */
function endKind(reason: SessionEndReason): SessionEndKind {
  switch (reason) {
    case 'user':
      return 'logout';
    case 'idle':
    case 'absolute':
      return 'timeout';
    case 'invalid_grant':
      return 'revoked';
    case 'backchannel':
      return 'backchannel';
    case 'elsewhere':
      return 'ended-elsewhere';
  }
}
