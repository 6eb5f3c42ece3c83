import { context, defaultTextMapGetter, ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, type Context, type Span } from '@opentelemetry/api';
import {
  ATTR_CLIENT_ADDRESS,
  ATTR_HTTP_REQUEST_METHOD,
  ATTR_HTTP_RESPONSE_STATUS_CODE,
  ATTR_HTTP_ROUTE,
  ATTR_URL_PATH,
  ATTR_URL_SCHEME,
} from '@opentelemetry/semantic-conventions';
import type { FastifyInstance, FastifyReply } from 'fastify';
import { pathOf, type ActiveTracing } from './tracing.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** The context of the request's server span (tracing on only): the parent of everything the request calls. */
    traceContext: Context | null;
  }
}

/** Probes and scrapes, every few seconds from every replica: traces of them would drown the requests. */
const UNTRACED_ROUTES = new Set(['/healthz', '/readyz', '/metrics']);

/**
 * A server span per request (probes and scrapes excepted), continuing the browser's W3C
 * trace when its `traceparent` is valid (else a new trace), named `METHOD route`
 * (`GET /api/*`). Its context is made active for the request's hooks and handler, so
 * provider and Redis spans become its children. Registered only while tracing is on:
 * these hooks are the whole per-request cost of it.
 */
export function traceRequests(app: FastifyInstance, tracing: ActiveTracing, scheme: 'http' | 'https'): void {
  const { tracer, propagator } = tracing;
  app.decorateRequest('traceContext', null);
  app.addHook('onRequest', (request, reply, done) => {
    const route = request.routeOptions.url;
    if (route !== undefined && UNTRACED_ROUTES.has(route)) {
      done();
      return;
    }
    const parent = propagator.extract(ROOT_CONTEXT, request.headers, defaultTextMapGetter);
    const span = tracer.startSpan(
      route ? `${request.method} ${route}` : request.method,
      {
        kind: SpanKind.SERVER,
        attributes: {
          [ATTR_HTTP_REQUEST_METHOD]: request.method,
          [ATTR_URL_PATH]: pathOf(request.url),
          [ATTR_URL_SCHEME]: scheme,
          [ATTR_CLIENT_ADDRESS]: request.ip,
          'token_handler.request_id': request.id,
          ...(route ? { [ATTR_HTTP_ROUTE]: route } : {}),
        },
      },
      parent,
    );
    const active = trace.setSpan(parent, span);
    request.traceContext = active;
    reply.raw.once('close', () => endRequestSpan(span, reply));
    context.with(active, done);
  });
  // A body is read in the socket's context: the handler gets the request's context back.
  app.addHook('preHandler', (request, _reply, done) => {
    if (request.traceContext) context.with(request.traceContext, done);
    else done();
  });
}

function endRequestSpan(span: Span, reply: FastifyReply): void {
  span.setAttribute(ATTR_HTTP_RESPONSE_STATUS_CODE, reply.statusCode);
  // The browser left before the whole response was sent.
  if (!reply.raw.writableFinished) span.setAttribute('token_handler.cut_off', true);
  if (reply.statusCode >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
  span.end();
}
