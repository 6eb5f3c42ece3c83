import { readFileSync } from 'node:fs';
import type { ServerResponse } from 'node:http';
import { Transform, type Readable, type TransformCallback } from 'node:stream';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import httpProxy from '@fastify/http-proxy';
import type { Span } from '@opentelemetry/api';
import type { RouteConfig } from '../config/types.js';
import { BrowserError, idpUnavailable, loginRequired, upstreamUnavailable } from '../errors.js';
import { ProviderError } from '../oidc/errors.js';
import type { SessionCookies } from '../session/cookies.js';
import type { LoadedSession, SessionManager } from '../session/manager.js';
import type { ClientTokens } from '../tokens/client-tokens.js';
import type { SessionTokens } from '../tokens/session-tokens.js';
import { browserResponseHeaders, upstreamRequestHeaders } from './headers.js';
import { andThen, settle } from '../awaitable.js';
import { Cors } from './cors.js';
import { UpstreamTracing } from './upstream-tracing.js';

export interface ApiRoutesOptions {
  routes: RouteConfig[];
  cookies: SessionCookies;
  sessions: SessionManager;
  sessionTokens: SessionTokens;
  clientTokens: ClientTokens;
  csrfCheck: (request: FastifyRequest) => void;
  csrfHeader: string;
  cors: Cors;
  /** `https` or `http`: what the browser used, sent as X-Forwarded-Proto. */
  publicProto: string;
  /** publicUrl's host, sent as X-Forwarded-Host (never the browser's Host header). */
  publicHost: string;
  replayBodyLimitBytes: number;
  /** Largest body streamed to an upstream (413 beyond). */
  bodyLimitBytes: number;
  retryAfterSeconds: number;
  /** Accounts for a response that was ready but could not be sent: the browser had gone. */
  browserLeft: (request: FastifyRequest, reply: FastifyReply) => void;
}

interface UpstreamResponse {
  statusCode: number;
  headers: Record<string, unknown>;
  stream: Readable;
}

/** A request body small enough to be kept, so the request can be replayed after a 401. */
class ReplayableBody {
  constructor(readonly bytes: Buffer) {}
}

/** What one proxied request carries between its hooks: per request, never shared. */
interface ProxyState {
  authorization?: string;
  session?: LoadedSession;
  clientToken?: string;
  /** Set once the request has been replayed after a 401, so it never loops. */
  retried: boolean;
  dest: string;
  fromOptions: Record<string, unknown>;
  /** The span of the upstream call in flight (tracing on only). */
  upstreamSpan?: Span | undefined;
}

declare module 'fastify' {
  interface FastifyRequest {
    proxyState: ProxyState | null;
  }
}

/** Serves every configured API route with @fastify/http-proxy. */
export async function apiRoutes(app: FastifyInstance, options: ApiRoutesOptions): Promise<void> {
  app.decorateRequest('proxyState', null);
  for (const route of options.routes) {
    await app.register(async (scope) => proxyRoute(scope, route, options));
  }
}

async function proxyRoute(scope: FastifyInstance, route: RouteConfig, options: ApiRoutesOptions): Promise<void> {
  const { cookies, sessionTokens, clientTokens, csrfCheck, cors } = options;
  const policy = { cookies, stripCookies: route.stripCookies, csrfHeader: options.csrfHeader };
  const retryOn401 = route.retryOn401 && route.token !== 'none';
  const needsSession = route.token === 'user' || !route.anonymous;
  const forwarded = { proto: options.publicProto, host: options.publicHost };
  // An upstream base path (http://h/base) is part of what the prefix is rewritten to:
  // reply-from resolves every destination against the upstream's origin.
  const upstreamUrl = new URL(route.upstream);
  const rewritePrefix = upstreamUrl.pathname.replace(/\/+$/, '') + route.rewritePrefix;
  const upstreamTracing = UpstreamTracing.forRoute(upstreamUrl, route.prefix);

  /**
   * Runs before a request body is read (from the body parser, so a request without a body
   * pays nothing for it): a call without the CSRF header, or without the session the route
   * needs, is refused without a byte of its body being read or buffered.
   */
  const checkBeforeBody = (request: FastifyRequest, proceed: (err: Error | null) => void): void => {
    settle(
      () => {
        csrfCheck(request);
        if (!needsSession) return undefined;
        return andThen(options.sessions.peek(request), (present) => {
          if (!present) throw loginRequired();
        });
      },
      (err) => proceed(err),
    );
  };

  // Bodies stream through; only those small enough to replay are buffered.
  scope.removeAllContentTypeParsers();
  scope.addContentTypeParser('*', (request, payload, done) => {
    checkBeforeBody(request, (err) => {
      if (err) done(err, undefined);
      else readBody(request, payload, done);
    });
  });

  const readBody = (request: FastifyRequest, payload: Readable, done: (err: Error | null, body?: unknown) => void): void => {
    const length = Number(request.headers['content-length']);
    if (Number.isSafeInteger(length) && length > options.bodyLimitBytes) {
      done(bodyTooLarge(options.bodyLimitBytes), undefined);
      return;
    }
    if (!Number.isSafeInteger(length)) {
      // Chunked: count as it streams, and stop it at the limit.
      done(null, payload.pipe(new BodyLimit(options.bodyLimitBytes)));
      return;
    }
    if (!retryOn401 || length > options.replayBodyLimitBytes) {
      done(null, payload);
      return;
    }
    const chunks: Buffer[] = [];
    payload.on('data', (chunk: Buffer) => chunks.push(chunk));
    payload.on('end', () => done(null, new ReplayableBody(Buffer.concat(chunks))));
    payload.on('error', (err) => done(err, undefined));
  };

  /** The session (when the route needs one) and the token, put on the request's state. */
  const authorize = (request: FastifyRequest, reply: FastifyReply, state: ProxyState) => {
    csrfCheck(request);
    if (route.token === 'user') return andThen(sessionTokens.current(request, reply), (session) => {
      state.session = session;
      state.authorization = authorizationOf(session.record);
    });
    const session = needsSession ? sessionTokens.present(request, reply) : undefined;
    if (route.token === 'client') return andThen(session, () => clientTokenOrThrow(clientTokens, route, options.retryAfterSeconds, request).then((tokens) => {
      state.clientToken = tokens.accessToken;
      state.authorization = authorizationOf(tokens);
    }));
    return session;
  };

  /** Whether an upstream 401 is answered with a new token and a replay (once per request, and once per token). */
  const mayRetry = (state: ProxyState): boolean => {
    if (state.retried || !state.authorization) return false;
    if (route.token === 'user') return state.session !== undefined && sessionTokens.mayRefreshAfter401(state.session.record);
    return state.clientToken !== undefined && clientTokens.replaceRejected(route.clientScopes, state.clientToken);
  };

  /**
   * Checks the call and finds its token, then forwards it. Run from the route's handler
   * rather than as a preHandler hook, which saves a hook runner per request; the handler
   * runs after @fastify/http-proxy has checked the destination, so a path escaping the
   * route is refused with 400 before the CSRF check and the session (no upstream is called
   * either way) — except for a request with a body, whose CSRF header and session the body
   * parser checked first (checkBeforeBody; the CSRF check runs again here, a header
   * compare). Callback style, settled synchronously when the session answers from memory:
   * the usual proxied request then costs no promise and no microtask hop here.
   */
  const authorizeAndForward = (request: FastifyRequest, reply: FastifyReply, dest: string, fromOptions: object): void => {
    reply.header('x-request-id', request.id);
    request.apiRoute = route.prefix;
    if (cors.active) {
      if (Cors.isPreflight(request)) {
        cors.preflight(request, reply);
        return;
      }
      cors.grant(request, reply);
    }
    const body = request.body;
    const state: ProxyState = {
      retried: false,
      // The route's root with a query (`/api?x=1`) comes as '' and reply-from would then
      // send the browser's own path; the root is '/'.
      dest: dest === '' ? '/' : dest,
      fromOptions:
        body instanceof ReplayableBody
          ? { ...fromOptions, body: body.bytes, contentType: request.headers['content-type'] ?? 'application/octet-stream' }
          : (fromOptions as Record<string, unknown>),
    };
    request.proxyState = state;
    if (upstreamTracing) upstreamTracing.endWithResponse(reply.raw, state);
    settle(
      () => authorize(request, reply, state),
      (err) => {
        if (err) {
          reply.send(err);
          return;
        }
        // reply.from throws on a destination it refuses (400); after a wait nobody else would catch it.
        try {
          reply.from(state.dest, state.fromOptions);
        } catch (fromError) {
          reply.send(fromError);
        }
      },
    );
  };

  /** The upstream could not be reached, timed out, or its response failed before anything was passed on. */
  const upstreamFailed = (reply: FastifyReply, error: Error & { code?: string }, timedOut: boolean): void => {
    // Nobody to answer: the browser has gone, and its leaving is the story, not the upstream.
    if (reply.raw.destroyed) {
      options.browserLeft(reply.request, reply);
      return;
    }
    reply.log.warn({ err: { message: error.message, code: error.code } }, 'upstream request failed');
    if (reply.request.body instanceof BodyLimit && reply.request.body.exceeded) {
      reply.send(bodyTooLarge(options.bodyLimitBytes));
      return;
    }
    reply.send(timedOut ? new BrowserError('upstream_timeout', 'The API behind this route did not answer in time.') : upstreamUnavailable());
  };

  /** After an upstream 401: a new token once, then the request again (or token_rejected when the body is gone). */
  const retryAfter401 = async (request: FastifyRequest, reply: FastifyReply, state: ProxyState): Promise<void> => {
    state.retried = true;
    if (route.token === 'user' && state.session) {
      state.session = await sessionTokens.refresh(request, reply, state.session, 'upstream_401');
      state.authorization = authorizationOf(state.session.record);
    } else if (route.token === 'client' && state.clientToken) {
      const tokens = await clientTokenOrThrow(clientTokens, route, options.retryAfterSeconds, request);
      state.authorization = authorizationOf(tokens);
    }
    if (!isReplayable(request)) {
      throw new BrowserError(
        'token_rejected',
        'The API rejected the access token. A new one has been obtained, but this request body was too large to replay: send the request again.',
      );
    }
    reply.from(state.dest, state.fromOptions);
  };

  /**
   * Gathers a small upstream body, then sends it in one write (see fitsBuffer). The chunks
   * undici hands over are kept as they are: a body that came in one read is sent as that
   * very Buffer, without the copy into a new ArrayBuffer that reading it through
   * `body.bytes()` made for every response.
   */
  const passWhole = (request: FastifyRequest, reply: FastifyReply, res: UpstreamResponse): void => {
    const body = res.stream;
    const chunks: Buffer[] = [];
    let length = 0;
    // A browser that leaves frees the upstream connection at once, as a piped stream would.
    (reply.raw as BufferingResponse)[kBufferingBody] = body;
    reply.raw.on('close', abandonBufferingBody);
    body.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      length += chunk.length;
    });
    body.on('end', () => {
      try {
        if (reply.raw.destroyed) options.browserLeft(request, reply);
        else reply.send(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, length));
      } catch (err) {
        reply.log.error({ err }, 'passing on a buffered upstream response failed');
        abandonBrowser(reply);
      }
    });
    // Also what a browser that left leads to: abandonBufferingBody destroys the body.
    body.on('error', (err: Error & { code?: string }) => {
      try {
        // Nothing has reached the browser yet: a clean error instead of half a body.
        dropUpstreamHeaders(reply, res.headers);
        upstreamFailed(reply, err, err.code === 'UND_ERR_BODY_TIMEOUT');
      } catch (sendError) {
        reply.log.error({ err: sendError }, 'answering for a failed upstream response failed');
        abandonBrowser(reply);
      }
    });
  };

  await scope.register(httpProxy, {
    upstream: upstreamUrl.origin,
    prefix: route.prefix,
    rewritePrefix,
    proxyPayloads: false,
    config: { apiRoute: route.prefix },
    disableRequestLogging: true,
    undici: {
      connections: route.connections,
      pipelining: 1,
      keepAliveTimeout: route.keepAliveTimeoutMs,
      headersTimeout: route.responseTimeoutMs,
      bodyTimeout: route.responseTimeoutMs,
      connect: {
        timeout: route.connectTimeoutMs,
        rejectUnauthorized: route.tlsRejectUnauthorized,
        ...(route.tlsCaFile ? { ca: readFileSync(route.tlsCaFile) } : {}),
      },
    },
    replyOptions: {
      rewriteRequestHeaders: (request, headers) => {
        const upstreamHeaders = upstreamRequestHeaders(
          headers,
          policy,
          { ip: request.ip, proto: forwarded.proto, host: forwarded.host },
          request.proxyState?.authorization,
        );
        upstreamHeaders['x-request-id'] = String(request.id);
        const state = request.proxyState;
        if (upstreamTracing && state) upstreamTracing.start(request, state, upstreamHeaders, state.dest);
        return upstreamHeaders;
      },
      rewriteHeaders: (headers) => browserResponseHeaders(headers, cookies),
      // reply-from's errors carry the status it would answer with: 504 for a timeout.
      onError: (reply, { error }) => {
        const timedOut = (error as { statusCode?: number }).statusCode === 504;
        if (upstreamTracing) upstreamTracing.failed((reply as FastifyReply).request.proxyState, error, timedOut);
        upstreamFailed(reply as FastifyReply, error, timedOut);
      },
      onResponse: (rawRequest, rawReply, rawRes) => {
        // reply-from's typings are wider than what it passes: the request and reply are ours,
        // the response is undici's { statusCode, headers, stream }.
        const request = rawRequest as FastifyRequest;
        const reply = rawReply as FastifyReply;
        const res = rawRes as unknown as UpstreamResponse;
        const state = request.proxyState;
        if (upstreamTracing) upstreamTracing.answered(state, res.statusCode);
        if (res.statusCode === 401 && retryOn401 && state && mayRetry(state)) {
          res.stream.resume();
          dropUpstreamHeaders(reply, res.headers);
          retryAfter401(request, reply, state).catch((err: unknown) => reply.send(err));
          return;
        }
        // Shared caches must never keep a response that sets our session cookie.
        if (cookies.setsSessionCookie(reply)) reply.header('cache-control', 'private, no-store');
        if (cors.active) cors.grant(request, reply);
        if (fitsBuffer(request, res, route.bufferResponseBytes)) {
          passWhole(request, reply, res);
          return;
        }
        // A body that breaks off mid-stream is logged by RequestLines.streamError.
        reply.send(res.stream);
      },
    },
    // Nothing returned: reply.from answers with the reply, a thenable, and Fastify would
    // then watch every response's end (an end-of-stream listener set) for nothing.
    handler: (request, reply, dest, fromOptions) => authorizeAndForward(request, reply, dest, fromOptions),
  });
}

/** Passes a streamed body through, failing it once it grows past the limit. */
class BodyLimit extends Transform {
  private seen = 0;
  exceeded = false;

  constructor(private readonly limit: number) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.seen += chunk.length;
    if (this.seen > this.limit) {
      this.exceeded = true;
      callback(new Error('request body over the limit'));
      return;
    }
    callback(null, chunk);
  }
}

/**
 * Authorization values by the object holding the token (a session record, a client token
 * set): built once per token rather than once per request, so the ~1 KB string is not
 * concatenated and flattened again for every request of a session.
 */
const authorizations = new WeakMap<object, string>();

/** The Authorization header value for a token (the provider's token_type, usually Bearer). */
function authorizationOf(token: { tokenType: string; accessToken: string }): string {
  let value = authorizations.get(token);
  if (value === undefined) {
    value = `${token.tokenType} ${token.accessToken}`;
    authorizations.set(token, value);
  }
  return value;
}

const kBufferingBody = Symbol('upstream body being read whole');
type BufferingResponse = ServerResponse & { [kBufferingBody]?: Readable };

/**
 * The browser's response closed: if before it was sent, stop reading the upstream's body.
 * One shared function rather than a closure per request, the body found on the response.
 */
function abandonBufferingBody(this: BufferingResponse): void {
  if (!this.writableFinished) this[kBufferingBody]?.destroy();
}

/**
 * Whether a response is read whole before it is passed on: it announces a body of at most
 * `limit` bytes. The browser then gets it in one write, which costs the proxy less than
 * piping a stream (no pipeline, no stream listeners, no write per chunk), and a body
 * that fails halfway becomes a clean 502/504 instead of a cut-off 200. Responses without
 * a length (streams, server-sent events) and longer ones stream as they come.
 */
function fitsBuffer(request: FastifyRequest, res: UpstreamResponse, limit: number): boolean {
  // HEAD, 204 and 304 carry no body, whatever Content-Length says: passed on as they are.
  if (limit === 0 || request.method === 'HEAD' || res.statusCode === 204 || res.statusCode === 304) return false;
  // Sent as a Buffer, a body without a type would get Fastify's application/octet-stream.
  if (res.headers['content-type'] === undefined) return false;
  const length = res.headers['content-length'];
  return typeof length === 'string' && /^\d+$/.test(length) && Number(length) <= limit;
}

/** Nothing could be sent: close the browser's connection rather than leave it waiting for a timeout. */
function abandonBrowser(reply: FastifyReply): void {
  if (!reply.raw.writableFinished) reply.raw.destroy();
}

/** Takes the upstream's headers off the reply before token-handler answers in its place. */
function dropUpstreamHeaders(reply: FastifyReply, headers: Record<string, unknown>): void {
  for (const name of Object.keys(headers)) reply.removeHeader(name);
}

function bodyTooLarge(limit: number): BrowserError {
  return new BrowserError('payload_too_large', `The request body is larger than ${limit} bytes.`);
}

function isReplayable(request: FastifyRequest): boolean {
  return request.body === undefined || request.body === null || request.body instanceof ReplayableBody;
}

async function clientTokenOrThrow(clientTokens: ClientTokens, route: RouteConfig, retryAfterSeconds: number, request: FastifyRequest) {
  try {
    return await clientTokens.get(route.clientScopes);
  } catch (err) {
    if (!(err instanceof ProviderError)) throw err;
    const log = err.kind === 'transient' ? request.log.warn.bind(request.log) : request.log.error.bind(request.log);
    log({ ...err.logFields(), route: route.prefix }, 'client credentials token unavailable');
    throw idpUnavailable(err.retryAfterSeconds ?? retryAfterSeconds);
  }
}
