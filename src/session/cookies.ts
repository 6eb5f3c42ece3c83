import type { FastifyReply, FastifyRequest } from 'fastify';
import type { CookieSerializeOptions } from '@fastify/cookie';
import type { SameSite } from '../config/types.js';

/** Browsers accept ~4096 bytes per cookie including name and attributes; stay well below. */
export const MAX_COOKIE_VALUE_BYTES = 3800;
/** A session never needs more chunks than this; more is hostile input. */
const MAX_CHUNKS = 16;
/** RFC 6265 cookie-name token: anything else cannot be set (or cleared) by a Set-Cookie. */
const COOKIE_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

const asIs = (value: string): string => value;

/** Whether a value can be part of a cookie name (pending logins are named after their state). */
export function isCookieNameToken(value: string): boolean {
  return COOKIE_NAME.test(value);
}

export interface CookieNamingOptions {
  /** true when publicUrl is https: enables the `__Host-` prefix and `Secure`. */
  secure: boolean;
  cookieName: string;
  sameSite: SameSite;
}

/**
 * Names, attributes and chunking of token-handler's own cookies: the session cookie
 * (`__Host-<name>`, possibly split as `<name>.0`, `<name>.1`, …) and the pending-login
 * cookies (`__Host-<name>_login.<state>`, SameSite=Lax because the provider's redirect
 * back is a cross-site navigation).
 */
export class SessionCookies {
  readonly sessionName: string;
  readonly pendingLoginPrefix: string;
  /** Chunks of a large session cookie are `<sessionName>.<n>`. */
  private readonly chunkPrefix: string;
  private readonly sessionAttributes: CookieSerializeOptions;
  private readonly pendingAttributes: CookieSerializeOptions;

  constructor(options: CookieNamingOptions) {
    const prefix = options.secure ? '__Host-' : '';
    this.sessionName = `${prefix}${options.cookieName}`;
    this.pendingLoginPrefix = `${prefix}${options.cookieName}_login.`;
    this.chunkPrefix = `${this.sessionName}.`;
    // Every value is an iron seal (letters, digits and . * - _ ~): cookie octets that
    // encodeURIComponent leaves as they are, so the scan of a 3 KB value per Set-Cookie is skipped.
    const base: CookieSerializeOptions = { path: '/', httpOnly: true, secure: options.secure, encode: asIs };
    this.sessionAttributes = { ...base, sameSite: options.sameSite };
    this.pendingAttributes = { ...base, sameSite: 'lax' };
  }

  /** Whether a cookie name belongs to token-handler (stripped before proxying). */
  isOwn(name: string): boolean {
    return (
      name === this.sessionName ||
      name.startsWith(this.pendingLoginPrefix) ||
      (name.startsWith(this.chunkPrefix) && /^\d+$/.test(name.slice(this.chunkPrefix.length)))
    );
  }

  /**
   * The cookies the browser sent, parsed on first use. @fastify/cookie's parsing hook is
   * off (registered with `hook: false`): a hook on every request of the app costs more than
   * the few requests that read cookies need (a proxied call reads one).
   */
  received(request: FastifyRequest): Record<string, string | undefined> {
    return (request.cookies ??= request.server.parseCookie(request.headers.cookie ?? ''));
  }

  /** The session cookie's value, reassembled from chunks; null when absent or broken (a gap). */
  readSession(request: FastifyRequest): string | null {
    const cookies = this.received(request);
    const whole = cookies[this.sessionName];
    if (whole !== undefined) return whole;
    let value = '';
    for (let i = 0; i < MAX_CHUNKS; i++) {
      const chunk = cookies[`${this.chunkPrefix}${i}`];
      if (chunk === undefined) break;
      value += chunk;
    }
    return value === '' ? null : value;
  }

  /**
   * Replies carrying a session Set-Cookie (set or cleared). @fastify/cookie writes the
   * header only when the reply is sent, so it is remembered here: such a response must be
   * kept from shared caches (see setsSessionCookie).
   */
  private readonly withSessionCookie = new WeakSet<FastifyReply>();

  /** Whether this reply sets or clears the session cookie. */
  setsSessionCookie(reply: FastifyReply): boolean {
    return this.withSessionCookie.has(reply);
  }

  /** Sets the session cookie, chunked when needed, and clears every stale chunk the browser sent. */
  writeSession(request: FastifyRequest, reply: FastifyReply, value: string, maxAgeSeconds: number): void {
    this.withSessionCookie.add(reply);
    const attributes = { ...this.sessionAttributes, maxAge: maxAgeSeconds };
    const written = new Set<string>();
    if (value.length <= MAX_COOKIE_VALUE_BYTES) {
      reply.setCookie(this.sessionName, value, attributes);
      written.add(this.sessionName);
    } else {
      for (let i = 0, offset = 0; offset < value.length; i++, offset += MAX_COOKIE_VALUE_BYTES) {
        const name = `${this.chunkPrefix}${i}`;
        reply.setCookie(name, value.slice(offset, offset + MAX_COOKIE_VALUE_BYTES), attributes);
        written.add(name);
      }
    }
    this.clearSessionCookies(request, reply, written);
  }

  /** Clears the session cookie and all of its chunks that the browser sent. */
  clearSession(request: FastifyRequest, reply: FastifyReply): void {
    this.clearSessionCookies(request, reply, new Set());
  }

  private clearSessionCookies(request: FastifyRequest, reply: FastifyReply, keep: ReadonlySet<string>): void {
    for (const name of Object.keys(this.received(request))) {
      if (!keep.has(name) && this.isSessionName(name)) {
        this.withSessionCookie.add(reply);
        reply.clearCookie(name, this.sessionAttributes);
      }
    }
  }

  private isSessionName(name: string): boolean {
    return this.isOwn(name) && !name.startsWith(this.pendingLoginPrefix);
  }

  pendingLoginName(state: string): string {
    return `${this.pendingLoginPrefix}${state}`;
  }

  /**
   * Names of the pending-login cookies the browser sent. Names that are not valid cookie
   * tokens were not set by us and cannot be cleared by a Set-Cookie: they are ignored.
   */
  pendingLoginNames(request: FastifyRequest): string[] {
    return Object.keys(this.received(request)).filter((n) => n.startsWith(this.pendingLoginPrefix) && COOKIE_NAME.test(n));
  }

  writePendingLogin(reply: FastifyReply, state: string, value: string, maxAgeSeconds: number): void {
    reply.setCookie(this.pendingLoginName(state), value, { ...this.pendingAttributes, maxAge: maxAgeSeconds });
  }

  clearPendingLogin(reply: FastifyReply, name: string): void {
    reply.clearCookie(name, this.pendingAttributes);
  }
}
