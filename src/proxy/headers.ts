import type { IncomingHttpHeaders } from 'node:http';
import type { SessionCookies } from '../session/cookies.js';
import type { StripCookies } from '../config/types.js';
import { identityValue, type IdentityHeaders } from './route-policy.js';

/** Hop-by-hop headers (RFC 9110 §7.6.1) never cross the proxy. */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

/**
 * Request headers a browser may not hand to the upstream: who the client is and where the
 * request came from are ours to say (X-Forwarded-* are set below), and frameworks route
 * on the rest (method overrides, original URLs). `expect` is answered here (Node sends the
 * 100 Continue); undici refuses a request carrying it.
 */
const BROWSER_MAY_NOT_SEND = new Set([
  'forwarded',
  'x-real-ip',
  'x-client-ip',
  'x-original-url',
  'x-rewrite-url',
  'x-original-uri',
  'x-http-method-override',
  'x-http-method',
  'x-method-override',
  'expect',
  // A DPoP proof is token-handler's to make (dpop: true routes), never a browser's.
  'dpop',
]);

const COMMON_CONNECTION_VALUES = new Set(['keep-alive', 'Keep-Alive', 'close', 'Close']);

export interface RequestHeaderPolicy {
  cookies: SessionCookies;
  stripCookies: StripCookies;
  csrfHeader: string;
}

/**
 * Headers sent upstream: without the browser's own `Authorization`, the CSRF header,
 * hop-by-hop headers, token-handler's cookies and any forwarding or routing header the
 * browser wrote; with the access token and our own X-Forwarded-*: For is the client
 * address as token-handler determined it (listen.trustProxy), only that; Host and Proto
 * are publicUrl's. A new object: copying the few headers kept is several times cheaper
 * than deleting from the original (a delete drops V8's fast object layout).
 * Identity headers (`routes[].identityHeaders`, any route's) are never taken from the
 * browser; with `identity.set`, they are set from the session's `claims`.
 */
export function upstreamRequestHeaders(
  headers: IncomingHttpHeaders,
  policy: RequestHeaderPolicy,
  forwarded: { ip: string; proto: string; host: string },
  authorization: string | undefined,
  identity?: IdentityHeaders,
  claims?: Record<string, unknown>,
): IncomingHttpHeaders {
  const listed = connectionListed(headers);
  const upstream: IncomingHttpHeaders = {};
  const dropped = identity?.dropped;
  for (const name in headers) {
    if (HOP_BY_HOP.has(name) || name === 'authorization' || name === 'cookie' || name === policy.csrfHeader || listed?.has(name)) continue;
    if (BROWSER_MAY_NOT_SEND.has(name) || name.startsWith('x-forwarded-') || dropped?.has(name)) continue;
    upstream[name] = headers[name];
  }
  if (identity !== undefined && claims !== undefined) {
    for (const [name, claim] of identity.set) {
      const value = identityValue(claims[claim]);
      if (value !== undefined) upstream[name] = value;
    }
  }
  const cookie = headers.cookie;
  if (cookie !== undefined && policy.stripCookies !== 'all' && !listed?.has('cookie')) {
    const kept = withoutOwnCookies(cookie, policy.cookies);
    if (kept !== '') upstream.cookie = kept;
  }
  if (authorization !== undefined) upstream.authorization = authorization;
  upstream['x-forwarded-for'] = forwarded.ip;
  upstream['x-forwarded-proto'] = forwarded.proto;
  upstream['x-forwarded-host'] = forwarded.host;
  return upstream;
}

/**
 * Headers passed back to the browser: without hop-by-hop headers, without DPoP-Nonce, without the upstream's
 * CORS headers (which origins may read a response is token-handler's to say:
 * csrf.allowedOrigins), and without any `Set-Cookie` that would overwrite one of
 * token-handler's cookies (the session and pending-login cookies belong to us; an
 * upstream may set any other cookie) or that has no name: browsers store `=x` and `x`
 * as a cookie named "" whose pair reads `x`, which could stand in for one of ours.
 */
export function browserResponseHeaders(headers: IncomingHttpHeaders, cookies: SessionCookies): IncomingHttpHeaders {
  const listed = connectionListed(headers);
  const browser: IncomingHttpHeaders = {};
  for (const name in headers) {
    // DPoP-Nonce is for token-handler's next proof, not for the browser (which makes none).
    if (HOP_BY_HOP.has(name) || name === 'set-cookie' || name === 'dpop-nonce' || listed?.has(name) || name.startsWith('access-control-')) continue;
    browser[name] = headers[name];
  }
  const setCookie = headers['set-cookie'];
  if (setCookie !== undefined && !listed?.has('set-cookie')) {
    const list = (Array.isArray(setCookie) ? setCookie : [String(setCookie)]).filter((c) => {
      const name = setCookieNameOf(c);
      return name !== '' && !cookies.isOwn(name);
    });
    if (list.length !== 0) browser['set-cookie'] = list;
  }
  return browser;
}

/** The cookie name a Set-Cookie sets, as browsers read it: '' when its first pair has no `=` (RFC 6265bis §5.6). */
function setCookieNameOf(setCookie: string): string {
  const semicolon = setCookie.indexOf(';');
  const pair = semicolon === -1 ? setCookie : setCookie.slice(0, semicolon);
  const eq = pair.indexOf('=');
  return eq === -1 ? '' : pair.slice(0, eq).trim();
}

/** The headers a `Connection` header names are hop-by-hop too (RFC 9110 §7.6.1). */
function connectionListed(headers: IncomingHttpHeaders): Set<string> | undefined {
  const connection = headers.connection;
  // What browsers and HTTP/1.1 clients send names no header: nothing more to drop.
  if (typeof connection !== 'string' || COMMON_CONNECTION_VALUES.has(connection)) return undefined;
  return new Set(connection.split(',').map((name) => name.trim().toLowerCase()));
}

/** The Cookie header without token-handler's own cookies ('' when nothing is left). */
function withoutOwnCookies(cookieHeader: string | string[], cookies: SessionCookies): string {
  const joined = Array.isArray(cookieHeader) ? cookieHeader.join('; ') : cookieHeader;
  let kept = '';
  // A scan rather than split/map/filter: the header is on every proxied request, and usually
  // holds nothing but our own session cookie, whose (2 KB) value is then never copied.
  for (let start = 0; start < joined.length; ) {
    let end = joined.indexOf(';', start);
    if (end === -1) end = joined.length;
    const eq = joined.indexOf('=', start);
    const hasValue = eq !== -1 && eq < end;
    const name = (hasValue ? joined.slice(start, eq) : joined.slice(start, end)).trim();
    if ((hasValue || name !== '') && !cookies.isOwn(name)) {
      const pair = joined.slice(start, end).trim();
      kept = kept === '' ? pair : `${kept}; ${pair}`;
    }
    start = end + 1;
  }
  return kept;
}
