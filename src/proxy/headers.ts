import type { IncomingHttpHeaders } from 'node:http';
import type { SessionCookies } from '../session/cookies.js';
import type { StripCookies } from '../config/types.js';

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

export interface RequestHeaderPolicy {
  cookies: SessionCookies;
  stripCookies: StripCookies;
  csrfHeader: string;
}

/**
 * Headers sent upstream: without the browser's own `Authorization`, the CSRF header,
 * hop-by-hop headers and token-handler's cookies; with the access token and
 * X-Forwarded-*. Mutates and returns `headers` (already a per-request copy).
 */
export function upstreamRequestHeaders(
  headers: IncomingHttpHeaders,
  policy: RequestHeaderPolicy,
  forwarded: { ip: string; proto: string; host: string | undefined },
  authorization: string | undefined,
): IncomingHttpHeaders {
  stripHopByHop(headers);
  delete headers.authorization;
  delete headers[policy.csrfHeader];
  const cookie = headers.cookie;
  if (cookie !== undefined) {
    const kept = policy.stripCookies === 'all' ? '' : withoutOwnCookies(cookie, policy.cookies);
    if (kept === '') delete headers.cookie;
    else headers.cookie = kept;
  }
  if (authorization !== undefined) headers.authorization = authorization;
  const priorFor = headers['x-forwarded-for'];
  headers['x-forwarded-for'] = typeof priorFor === 'string' && priorFor !== '' ? `${priorFor}, ${forwarded.ip}` : forwarded.ip;
  headers['x-forwarded-proto'] = forwarded.proto;
  if (forwarded.host !== undefined) headers['x-forwarded-host'] = forwarded.host;
  return headers;
}

/**
 * Headers passed back to the browser: without hop-by-hop headers and without any
 * `Set-Cookie` that would overwrite one of token-handler's cookies (the session and
 * pending-login cookies belong to us; an upstream may set any other cookie).
 */
export function browserResponseHeaders(headers: IncomingHttpHeaders, cookies: SessionCookies): IncomingHttpHeaders {
  stripHopByHop(headers);
  const setCookie = headers['set-cookie'];
  if (setCookie !== undefined) {
    const list = (Array.isArray(setCookie) ? setCookie : [String(setCookie)]).filter((c) => !cookies.isOwn(cookieNameOf(c)));
    if (list.length === 0) delete headers['set-cookie'];
    else headers['set-cookie'] = list;
  }
  return headers;
}

function stripHopByHop(headers: IncomingHttpHeaders): void {
  const connection = headers.connection;
  if (typeof connection === 'string') {
    for (const name of connection.split(',')) delete headers[name.trim().toLowerCase()];
  }
  // Deleting only what is there keeps the headers object in V8's fast mode.
  for (const name of HOP_BY_HOP) if (headers[name] !== undefined) delete headers[name];
}

function withoutOwnCookies(cookieHeader: string | string[], cookies: SessionCookies): string {
  const joined = Array.isArray(cookieHeader) ? cookieHeader.join('; ') : cookieHeader;
  return joined
    .split(';')
    .map((pair) => pair.trim())
    .filter((pair) => pair !== '' && !cookies.isOwn(cookieNameOf(pair)))
    .join('; ');
}

/** The name in `name=value` (a Cookie pair) or `name=value; attrs` (a Set-Cookie). */
function cookieNameOf(cookie: string): string {
  const eq = cookie.indexOf('=');
  return (eq === -1 ? cookie : cookie.slice(0, eq)).trim();
}
