import { randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { LogController, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { Metrics } from './metrics.js';
import type { AccessLog } from './access-log.js';
import { sessionHash } from '../state/record.js';

/** Request ids accepted from clients: short and plain, so they cannot forge log lines. */
const CLIENT_REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/**
 * New request ids: a random prefix per process (72 bits, so replicas and restarts never
 * share one) and a counter. Unique like a UUID, at a fraction of the cost: a UUID per request
 * was a measurable share of what token-handler adds to a proxied request (bench/README.md).
 */
const ID_PREFIX = `${randomBytes(9).toString('hex')}-`;
let idsMade = 0;

/** Fastify's genReqId: the client's X-Request-Id when it is safe, else a new id. */
export function requestId(request: IncomingMessage): string {
  const given = request.headers['x-request-id'];
  return typeof given === 'string' && CLIENT_REQUEST_ID.test(given) ? given : `${ID_PREFIX}${idsMade++}`;
}

/** What the request lines and metrics of one app need. */
export interface ObservedApp {
  metrics: Metrics;
  /** The app's name on its request lines; undefined in the single-app form (lines stay as they were). */
  name: string | undefined;
  /** '' or the app's path prefix (apps[].match.pathPrefix), which its /auth paths sit below. */
  pathPrefix: string;
  /** Configured API route prefixes. */
  routePrefixes: string[];
  /** Their metric groups (`api:<prefix>`), made once. */
  apiGroups: ReadonlyMap<string, string>;
}

/** An app as its request lines and metrics see it. */
export function observedApp(app: Omit<ObservedApp, 'apiGroups'>): ObservedApp {
  return { ...app, apiGroups: new Map(app.routePrefixes.map((prefix) => [prefix, `api:${prefix}`])) };
}

export interface RequestObservationOptions {
  /** Where the request lines go. */
  accessLog: AccessLog;
  includeSubject: boolean;
  /**
   * The app a request belongs to: a constant in the single-app form; with several apps, the
   * app of the request's route (read from its encapsulation context, no lookup by host).
   */
  appOf(request: FastifyRequest): ObservedApp;
}

/**
 * Fastify's own per-request lines, replaced by ours: one request line and one metrics
 * sample per request, with a request id (echoed to the browser by the routes themselves
 * and sent upstream). Only session-safe identifiers are logged: a hash of the session id,
 * and the `sub` only when `logging.includeSubject` is on.
 *
 * Fastify calls `requestCompleted` once for every request whose response was sent, and
 * `streamError` when a streamed response breaks off after its headers went out (an
 * upstream reset or stalled body, or the browser going away), for which it reports no
 * completed request: the line is written there, marked `cutOff`. Overriding these methods is
 * Fastify's documented way to customise those lines; it also spares every request a hook
 * runner (onResponse) and a listener on the upstream's body. Its incoming-request line
 * stays off.
 */
export class RequestLines extends LogController {
  /** Set by observeRequests once the metrics and the access log exist. */
  observe: ((request: FastifyRequest, reply: FastifyReply, cutOff: boolean) => void) | undefined;

  constructor() {
    super({ disableRequestLogging: true });
  }

  override requestCompleted(_error: Error | null | undefined, request: FastifyRequest, reply: FastifyReply): void {
    this.observe?.(request, reply, false);
  }

  override streamError(error: Error & { code?: string }, request: FastifyRequest, reply: FastifyReply): void {
    const err = { message: error.message, code: error.code };
    if (error.code === 'ERR_STREAM_PREMATURE_CLOSE') request.log.info({ err }, 'response cut off mid-stream: the browser went away');
    else request.log.warn({ err }, 'response cut off mid-stream: the upstream response failed');
    this.observe?.(request, reply, true);
  }

  /**
   * A response token-handler did not send because the browser had already gone (a small
   * upstream response, read whole, or the error for an upstream that failed): Fastify
   * reports nothing for it, so the line is written here, marked `cutOff` like a stream the
   * browser walked away from.
   */
  browserLeft(request: FastifyRequest, reply: FastifyReply): void {
    request.log.info('response not sent: the browser went away');
    this.observe?.(request, reply, true);
  }
}

export function observeRequests(app: FastifyInstance, lines: RequestLines, options: RequestObservationOptions): void {
  const { includeSubject, accessLog, appOf } = options;
  const groupOf = (request: FastifyRequest, observed: ObservedApp): { group: string; route?: string } => {
    const { routePrefixes, pathPrefix, apiGroups } = observed;
    const url = request.url;
    const path = pathPrefix !== '' && url.startsWith(pathPrefix) ? url.slice(pathPrefix.length) : url;
    if (path.startsWith('/auth/')) return { group: 'auth' };
    if (path === '/healthz' || path === '/readyz' || path === '/metrics') return { group: 'ops' };
    // The proxy names its route on the request; routeOptions (a getter that builds an object
    // per call) is only the fallback for requests that failed before the proxy saw them.
    const route = request.apiRoute ?? request.routeOptions.config.apiRoute;
    return route ? { group: apiGroups.get(route) ?? `api:${route}`, route } : { group: routePrefixes.find((p) => path.startsWith(p)) ? 'api' : 'other' };
  };

  const observe = (request: FastifyRequest, reply: FastifyReply, cutOff: boolean) => {
    const observed = appOf(request);
    const { metrics } = observed;
    const { group, route } = groupOf(request, observed);
    const elapsedMs = reply.elapsedTime;
    metrics.request(group, cutOff ? 'cut_off' : reply.statusCode);
    if (route) metrics.proxied(route, elapsedMs / 1000);
    if (!accessLog.enabled) return;
    const session = request.session;
    accessLog.write({
      reqId: request.id,
      method: request.method,
      url: loggableUrl(request.url),
      status: reply.statusCode,
      cutOff,
      ms: elapsedMs,
      group,
      app: observed.name,
      session: session ? sessionHash(session) : undefined,
      sub: session && includeSubject ? String(session.claims.sub) : undefined,
    });
  };

  app.decorateRequest('apiRoute', null);
  lines.observe = observe;
}

declare module 'fastify' {
  interface FastifyContextConfig {
    /** The API route prefix a proxied route serves (for metrics and logs). */
    apiRoute?: string;
  }
  interface FastifyRequest {
    /** The same prefix, set by the proxy once it handles the request (cheaper to read than routeOptions). */
    apiRoute: string | null;
  }
}

/** The callback's query carries the authorization code: log the path only (below an app's path prefix too). */
export function loggableUrl(url: string): string {
  const query = url.indexOf('?');
  return query !== -1 && (url.startsWith('/auth/callback') || url.slice(0, query).endsWith('/auth/callback')) ? `${url.slice(0, query)}?[redacted]` : url;
}
