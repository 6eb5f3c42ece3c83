import type { FastifyReply, FastifyRequest } from 'fastify';
import type { CsrfConfig } from '../config/types.js';
import { csrfFailed } from '../errors.js';

/** Methods a page on an allowed origin may use (what the proxy and /auth serve). */
const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'];
const ALLOW_METHODS = METHODS.join(', ');
/** RFC 9110 token characters: what a header name may consist of. */
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** Requested headers allowed at most, and their total length: a preflight is not a place to send a novel. */
const MAX_REQUESTED_HEADERS = 32;
const MAX_REQUESTED_LENGTH = 1024;
/** How long a browser may cache a preflight answer. */
const MAX_AGE_SECONDS = 600;

/**
 * CORS for `csrf.allowedOrigins`: their pages must pass a preflight before they can send the
 * CSRF header, and must be told they may read the answer. Our own origin never needs either
 * (same-origin calls are not subject to CORS); every other origin is refused.
 */
export class Cors {
  private readonly allowed: Set<string>;

  constructor(
    config: CsrfConfig,
    private readonly csrfHeader: string,
  ) {
    this.allowed = new Set(config.allowedOrigins);
  }

  /** A CORS preflight: OPTIONS with Access-Control-Request-Method. */
  static isPreflight(request: FastifyRequest): boolean {
    return request.method === 'OPTIONS' && request.headers['access-control-request-method'] !== undefined;
  }

  /**
   * Answers a preflight: 204 with the CORS grant for an allowed origin and method, else
   * 403 csrf_failed (thrown). Never reaches an upstream.
   */
  preflight(request: FastifyRequest, reply: FastifyReply): void {
    const origin = request.headers.origin;
    if (origin === undefined || !this.allowed.has(origin)) throw csrfFailed('Cross-origin calls from this origin are not allowed.');
    const method = String(request.headers['access-control-request-method']).toUpperCase();
    if (!METHODS.includes(method)) throw csrfFailed(`The method ${method.slice(0, 20)} is not allowed cross-origin.`);
    reply
      .code(204)
      .header('access-control-allow-origin', origin)
      .header('access-control-allow-credentials', 'true')
      .header('access-control-allow-methods', ALLOW_METHODS)
      .header('access-control-allow-headers', this.allowHeaders(request.headers['access-control-request-headers']))
      .header('access-control-max-age', String(MAX_AGE_SECONDS))
      .header('vary', 'Origin, Access-Control-Request-Method, Access-Control-Request-Headers')
      .header('cache-control', 'no-store')
      .send();
  }

  /**
   * Lets a page on an allowed origin read this response (Allow-Origin and
   * Allow-Credentials); nothing for our own origin or calls without an Origin.
   */
  grant(request: FastifyRequest, reply: FastifyReply): void {
    const origin = request.headers.origin;
    if (origin === undefined || !this.allowed.has(origin)) return;
    reply.header('access-control-allow-origin', origin).header('access-control-allow-credentials', 'true');
    // Added to what the upstream said varies, not in its place.
    const vary = reply.getHeader('vary');
    const listed = Array.isArray(vary) ? vary.join(', ') : vary === undefined ? '' : String(vary);
    if (!/(^|,)\s*(origin|\*)\s*(,|$)/i.test(listed)) reply.header('vary', listed === '' ? 'Origin' : `${listed}, Origin`);
  }

  /** Whether any origin besides our own may call: without one, `grant` has nothing to do. */
  get active(): boolean {
    return this.allowed.size > 0;
  }

  /** The CSRF header, and what the page asked for when it is a plain list of header names. */
  private allowHeaders(requested: string | string[] | undefined): string {
    const names = new Set([this.csrfHeader, 'content-type']);
    const text = Array.isArray(requested) ? requested.join(',') : (requested ?? '');
    if (text.length <= MAX_REQUESTED_LENGTH) {
      for (const raw of text.split(',').slice(0, MAX_REQUESTED_HEADERS)) {
        const name = raw.trim().toLowerCase();
        if (HEADER_NAME.test(name)) names.add(name);
      }
    }
    return [...names].join(', ');
  }
}
