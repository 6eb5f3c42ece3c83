import type { IncomingHttpHeaders } from 'node:http';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import httpProxy from '@fastify/http-proxy';
import type { RouteConfig } from '../config/types.js';
import { BrowserError } from '../errors.js';
import { browserResponseHeaders, upstreamRequestHeaders, type RequestHeaderPolicy } from '../proxy/headers.js';

export interface DevServerOptions {
  route: RouteConfig & { upstream: string };
  policy: RequestHeaderPolicy;
  /** What the browser used (X-Forwarded-Proto) and publicUrl's host (X-Forwarded-Host). */
  publicProto: string;
  publicHost: string;
}

/**
 * The SPA's dev server (Vite, webpack) behind the frontend route, for local development:
 * every request and, with `websocket: true`, the hot-reload WebSocket, with neither
 * token-handler's cookies nor a token sent to it. The dev server does its own SPA fallback.
 */
export async function devServerProxy(scope: FastifyInstance, options: DevServerOptions): Promise<void> {
  const { route, policy } = options;
  const upstream = new URL(route.upstream);
  const forwardedFor = (ip: string) => ({ ip, proto: options.publicProto, host: options.publicHost });
  await scope.register(httpProxy, {
    upstream: upstream.origin,
    prefix: '/',
    rewritePrefix: upstream.pathname.replace(/\/+$/, '') + route.rewritePrefix,
    websocket: route.websocket,
    disableRequestLogging: true,
    undici: {
      connections: route.connections,
      keepAliveTimeout: route.keepAliveTimeoutMs,
      headersTimeout: route.responseTimeoutMs,
      bodyTimeout: route.responseTimeoutMs,
      connect: { timeout: route.connectTimeoutMs },
    },
    replyOptions: {
      rewriteRequestHeaders: (request, headers) => upstreamRequestHeaders(headers, policy, forwardedFor(request.ip), undefined),
      rewriteHeaders: (headers) => browserResponseHeaders(headers, policy.cookies),
      onError: (reply, { error }) => {
        (reply as FastifyReply).log.warn({ err: { message: error.message } }, 'dev server request failed');
        reply.send(new BrowserError('upstream_unavailable', "The SPA's dev server could not be reached: is it running?"));
      },
    },
    wsClientOptions: {
      // The upgrade's own headers are the WebSocket client's; only the browser's origin and its cookies (not ours) go along.
      rewriteRequestHeaders: (_headers: IncomingHttpHeaders, request: FastifyRequest) => {
        const kept = upstreamRequestHeaders(request.headers, policy, forwardedFor(request.ip), undefined);
        return { ...(kept.origin ? { origin: kept.origin } : {}), ...(kept.cookie ? { cookie: kept.cookie } : {}) };
      },
    },
  });
}
