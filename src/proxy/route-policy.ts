import type { IncomingHttpHeaders } from 'node:http';
import type { RouteConfig } from '../config/types.js';
import { BrowserError, StepUpRequiredError } from '../errors.js';
import type { SessionRecord } from '../state/record.js';

/**
 * A route's `require` (docs: README "Route policies"), compiled once at startup: the
 * claims the session must carry (403 `insufficient_claims`), the acr it must have been
 * signed in with and how recent that sign-in must be (401 `step_up_required`, with what a
 * new login must ask for). A route without `require` has no policy: nothing runs per request.
 */
export class RoutePolicy {
  private readonly claims: ReadonlyArray<readonly [string, readonly string[]]>;
  private readonly acr: ReadonlySet<string> | undefined;
  private readonly acrValues: string | undefined;
  private readonly maxAgeSeconds: number | undefined;

  private constructor(
    require: NonNullable<RouteConfig['require']>,
    private readonly publicOrigin: string,
    private readonly now: () => number,
    private readonly loginPath: string,
  ) {
    this.claims = Object.entries(require.claims ?? {});
    this.acr = require.acr ? new Set(require.acr) : undefined;
    this.acrValues = require.acr?.join(' ');
    this.maxAgeSeconds = require.maxAgeSeconds;
  }

  /**
   * The route's policy, or undefined for a route without `require` (or an empty one).
   * `loginPath`: the app's login (below its path prefix when apps share a host).
   */
  static forRoute(route: RouteConfig, publicUrl: string, now: () => number, loginPath = '/auth/login'): RoutePolicy | undefined {
    const require = route.require;
    if (!require || (Object.keys(require.claims ?? {}).length === 0 && !require.acr && require.maxAgeSeconds === undefined)) return undefined;
    return new RoutePolicy(require, new URL(publicUrl).origin, now, loginPath);
  }

  /** Throws the browser's answer when the session does not satisfy the route. */
  check(record: SessionRecord, headers: IncomingHttpHeaders): void {
    const claims = record.claims;
    for (const [name, values] of this.claims) {
      if (!hasEvery(claims[name], values)) {
        throw new BrowserError('insufficient_claims', 'Your account is not allowed to use this API (its claims do not satisfy the route).');
      }
    }
    const acrMissing = this.acr !== undefined && !(typeof claims.acr === 'string' && this.acr.has(claims.acr));
    const tooOld = this.maxAgeSeconds !== undefined && !this.recentEnough(claims.auth_time, this.maxAgeSeconds);
    if (!acrMissing && !tooOld) return;
    const query = new URLSearchParams();
    if (acrMissing) query.set('acr_values', this.acrValues!);
    if (tooOld) query.set('max_age', String(this.maxAgeSeconds));
    const returnTo = this.returnToOf(headers.referer);
    if (returnTo !== undefined) query.set('returnTo', returnTo);
    throw new StepUpRequiredError(
      acrMissing ? 'This API needs a stronger sign-in: sign in again with the level asked for.' : 'This API needs a recent sign-in: sign in again.',
      {
        ...(acrMissing ? { acr_values: this.acrValues! } : {}),
        ...(tooOld ? { max_age: this.maxAgeSeconds! } : {}),
        login_url: `${this.loginPath}?${query.toString()}`,
      },
    );
  }

  private recentEnough(authTime: unknown, maxAgeSeconds: number): boolean {
    return typeof authTime === 'number' && Number.isFinite(authTime) && this.now() / 1000 - authTime <= maxAgeSeconds;
  }

  /** The page the call came from (a same-origin Referer), to come back to after the login. */
  private returnToOf(referer: string | undefined): string | undefined {
    if (referer === undefined || !referer.startsWith(`${this.publicOrigin}/`)) return undefined;
    try {
      const url = new URL(referer);
      return url.origin === this.publicOrigin ? `${url.pathname}${url.search}` : undefined;
    } catch {
      return undefined;
    }
  }
}

/** Whether a claim holds every listed value: an array contains each, a plain value equals it. */
function hasEvery(claim: unknown, values: readonly string[]): boolean {
  if (Array.isArray(claim)) return values.every((value) => claim.some((item) => isPlain(item) && String(item) === value));
  if (!isPlain(claim)) return false;
  const text = String(claim);
  return values.every((value) => value === text);
}

function isPlain(value: unknown): value is string | number | boolean {
  return typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean';
}

/**
 * Identity headers: every name any route configures is removed from what browsers send,
 * on every route; a route that configures them gets them set from the session's claims.
 */
export interface IdentityHeaders {
  /** Lower-case names never taken from the browser (all routes' identity headers). */
  readonly dropped: ReadonlySet<string>;
  /** This route's [lower-case header name, claim name] pairs (empty: none set). */
  readonly set: ReadonlyArray<readonly [string, string]>;
}

/** The identity header names of every route, lower-case; undefined when no route has any. */
export function identityHeaderNames(routes: readonly RouteConfig[]): ReadonlySet<string> | undefined {
  const names = new Set(routes.flatMap((route) => Object.keys(route.identityHeaders ?? {}).map((name) => name.toLowerCase())));
  return names.size === 0 ? undefined : names;
}

/** The header value of a claim: strings and numbers as they are, arrays comma-separated; undefined for anything else. */
export function identityValue(claim: unknown): string | undefined {
  let text: string;
  if (Array.isArray(claim)) {
    if (!claim.every(isPlain)) return undefined;
    text = claim.map(String).join(', ');
  } else if (isPlain(claim)) {
    text = String(claim);
  } else {
    return undefined;
  }
  // Header values are bytes: anything but printable ASCII (names with accents, CR/LF) goes percent-encoded (UTF-8).
  return /^[\x20-\x7e]*$/.test(text) ? text : encodeURIComponent(text);
}
