import type { Socket } from 'node:net';
import Fastify, { type FastifyInstance, type FastifyPluginAsync, type FastifyReply, type FastifyServerOptions } from 'fastify';
import fastifyPlugin from 'fastify-plugin';
import type { DestinationStream } from 'pino';
import type { Config } from './config/types.js';
import { BrowserError } from './errors.js';
import { sendError } from './failures.js';
import { AUTH_BODY_LIMIT_BYTES } from './routes/auth.js';
import { makeChildLoggersLazy } from './ops/request-logger.js';
import { RequestLines, loggableUrl, requestId } from './ops/request-log.js';
import { AccessLog } from './ops/access-log.js';
import { logDestination } from './ops/log-destination.js';
import { kServerBinding, tokenHandler, type ServerBinding } from './plugin.js';

export { tokenHandler, type TokenHandlerOptions } from './plugin.js';
export { loadConfig, parseConfig, ConfigError } from './config/load.js';
export type { Config } from './config/types.js';

export interface BuildOptions {
  /** Clock in epoch milliseconds; tests inject one to move time without sleeping. */
  now?: () => number;
  /** Where logs go (default stdout); tests capture them to scan for leaks. */
  logStream?: DestinationStream;
  /** Wait for provider discovery before resolving (tests); the service itself starts without waiting. */
  waitForProvider?: boolean;
  /** Extra Fastify plugins registered after token-handler's own routes (the demo page uses this). */
  plugins?: FastifyPluginAsync[];
}

/**
 * Never logged. Explicit paths, not wildcards: pino's redaction runs on every log line,
 * and wildcard paths cost several times more on the hot path (one line per request).
 * The leak guard of the test suite checks that no token reaches a log line at all.
 */
export const REDACTED_PATHS = [
  'req.headers.authorization',
  'req.headers.cookie',
  'res.headers["set-cookie"]',
  'headers.authorization',
  'headers.cookie',
  'headers["set-cookie"]',
  'accessToken',
  'refreshToken',
  'idToken',
  'access_token',
  'refresh_token',
  'id_token',
  'logout_token',
  'clientSecret',
  'secrets',
  'password',
  'record.accessToken',
  'record.refreshToken',
  'record.idToken',
  'tokens.accessToken',
  'tokens.refreshToken',
  'tokens.idToken',
  // DPoP (oidc.dpop): proofs and the session's private key.
  'req.headers.dpop',
  'headers.dpop',
  'dpopKey',
  'record.dpopKey',
];

/**
 * The standalone token-handler server for a validated configuration: Fastify with the
 * server-level settings (logger and its redaction, timeouts, header size, trustProxy, our
 * own request lines) and the token-handler plugin registered on it.
 */
export async function buildApp(config: Config, options: BuildOptions = {}): Promise<FastifyInstance> {
  const now = options.now ?? Date.now;
  // One destination for the application's lines and the request lines, so they stay in order.
  const ownDestination = options.logStream ? undefined : logDestination(1, config.logging.batchRequestLines);
  const logStream = options.logStream ?? ownDestination!;
  const requestLines = new RequestLines();
  const app = Fastify({
    logger: loggerOptions(config, logStream),
    // One line per request is logged by observeRequests, with session-safe fields only.
    logController: requestLines,
    genReqId: requestId,
    requestIdHeader: false,
    // What Fastify's own parsers read: token-handler's routes take small bodies, and a
    // request for no route (a 404) must not have a large one read first. The proxied routes
    // parse their bodies themselves, within limits.bodyLimitBytes.
    bodyLimit: AUTH_BODY_LIMIT_BYTES,
    // A browser that sends its headers or body slowly, or never, cannot hold a connection
    // (and its socket and parser) open for long. Node checks these timeouts every
    // connectionsCheckingInterval, so that is kept well below the shortest of them.
    http: {
      maxHeaderSize: config.limits.headerLimitBytes,
      headersTimeout: config.limits.headersTimeoutMs,
      connectionsCheckingInterval: Math.max(250, Math.min(5000, Math.floor(config.limits.headersTimeoutMs / 2))),
    },
    requestTimeout: config.limits.requestTimeoutMs,
    keepAliveTimeout: config.limits.keepAliveTimeoutMs,
    connectionTimeout: config.limits.connectionTimeoutMs,
    clientErrorHandler: answerClientError,
    trustProxy: config.listen.trustProxy,
    // Errors Fastify raises before routing (a malformed percent-encoding in the path, …)
    // get our JSON shape too.
    frameworkErrors: (_error: Error, _request: unknown, reply: FastifyReply) =>
      sendError(reply, new BrowserError('bad_request', 'The request URL could not be understood.')),
    return503OnClosing: true,
  } as FastifyServerOptions);
  // Each request's logger is made when it first writes a line (most never do).
  makeChildLoggersLazy(app.log);
  const binding: ServerBinding = { requestLines, accessLog: new AccessLog(logStream, config.logging.level) };
  // Not encapsulated here: the server is token-handler, and its decorators (metrics, shutdown) are the app's.
  const pluginOptions = { ...config, now, waitForProvider: options.waitForProvider ?? false, [kServerBinding]: binding };
  await app.register(fastifyPlugin(tokenHandler), pluginOptions);
  for (const plugin of options.plugins ?? []) await app.register(plugin);
  app.addHook('onClose', async () => ownDestination?.close());
  return app;
}



/**
 * Errors Node's HTTP parser raises before Fastify sees a request (oversized headers,
 * malformed requests): answered as JSON like every other error, then the socket closes.
 */
function answerClientError(error: Error & { code?: string }, socket: Socket): void {
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  const answer = clientErrorAnswer(error.code);
  const body = JSON.stringify(answer.error.toJSON());
  const status = answer.status;
  socket.end(
    `HTTP/1.1 ${status}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  );
}

/** The answer to an error Node's HTTP server raised, by its code. */
function clientErrorAnswer(code: string | undefined): { error: BrowserError; status: string } {
  switch (code) {
    case 'HPE_HEADER_OVERFLOW':
      return { error: new BrowserError('headers_too_large', 'The request headers are too large.'), status: '431 Request Header Fields Too Large' };
    // limits.headersTimeoutMs or limits.requestTimeoutMs ran out before the request was whole.
    case 'ERR_HTTP_REQUEST_TIMEOUT':
    case 'ERR_HTTP_HEADERS_TIMEOUT':
      return { error: new BrowserError('request_timeout', 'The request was not sent in time.'), status: '408 Request Timeout' };
    default:
      return { error: new BrowserError('bad_request', 'The request could not be parsed.'), status: '400 Bad Request' };
  }
}

function loggerOptions(config: Config, stream: DestinationStream): FastifyServerOptions['logger'] {
  return {
    level: config.logging.level,
    redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
    serializers: {
      req: (req: { method: string; url: string; id: string }) => ({ method: req.method, url: loggableUrl(req.url), reqId: req.id }),
    },
    stream,
  };
}
