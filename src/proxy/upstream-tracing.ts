import type { IncomingHttpHeaders, ServerResponse } from 'node:http';
import { context, defaultTextMapSetter, SpanKind, SpanStatusCode, trace, type Attributes, type Span } from '@opentelemetry/api';
import { ATTR_HTTP_REQUEST_METHOD, ATTR_HTTP_RESPONSE_STATUS_CODE, ATTR_SERVER_ADDRESS, ATTR_SERVER_PORT, ATTR_URL_PATH } from '@opentelemetry/semantic-conventions';
import type { FastifyRequest } from 'fastify';
import { activeTracing, markFailed, pathOf, type ActiveTracing } from '../ops/tracing.js';
import { isTimeout, type UpstreamError } from './upstream-exchange.js';

/** Where the span of a request's upstream call in flight is kept (the proxy's per-request state). */
export interface UpstreamCall {
  upstreamSpan?: Span | undefined;
}

/**
 * The client span of each call to one route's upstream, and the `traceparent` the upstream
 * gets: ours (this span as its parent), in place of the browser's, so a malformed one is
 * never passed on. Without tracing there is no instance, and the browser's `traceparent`
 * and `tracestate` go through untouched, as through any transparent proxy.
 */
export class UpstreamTracing {
  private readonly attributes: Attributes;
  private readonly host: string;

  private constructor(
    private readonly tracing: ActiveTracing,
    upstream: URL,
    routePrefix: string,
  ) {
    this.host = upstream.host;
    this.attributes = {
      [ATTR_SERVER_ADDRESS]: upstream.hostname,
      [ATTR_SERVER_PORT]: Number(upstream.port || (upstream.protocol === 'https:' ? 443 : 80)),
      'token_handler.api_route': routePrefix,
    };
  }

  /** One per route while tracing is on; undefined otherwise, so the proxy does nothing extra. */
  static forRoute(upstream: URL, routePrefix: string): UpstreamTracing | undefined {
    const tracing = activeTracing();
    return tracing ? new UpstreamTracing(tracing, upstream, routePrefix) : undefined;
  }

  /** Starts the span of one upstream call (a child of the request's span) and writes its context into the upstream's headers. */
  start(request: Pick<FastifyRequest, 'method' | 'traceContext'>, call: UpstreamCall, headers: IncomingHttpHeaders, upstreamPath: string): void {
    const parent = request.traceContext ?? context.active();
    const span = this.tracing.tracer.startSpan(
      `${request.method} ${this.host}`,
      { kind: SpanKind.CLIENT, attributes: { ...this.attributes, [ATTR_HTTP_REQUEST_METHOD]: request.method, [ATTR_URL_PATH]: pathOf(upstreamPath) } },
      parent,
    );
    delete headers.traceparent;
    delete headers.tracestate;
    this.tracing.propagator.inject(trace.setSpan(parent, span), headers, defaultTextMapSetter);
    call.upstreamSpan = span;
  }

  /** Ends the call's span, should the browser's response close first (the call's answer is then dropped unreported). */
  endWithResponse(response: ServerResponse, call: UpstreamCall): void {
    response.once('close', () => this.end(call, (span) => markFailed(span, { type: 'browser_left' })));
  }

  /** The upstream answered (its headers arrived). */
  answered(call: UpstreamCall | null, statusCode: number): void {
    this.end(call, (span) => {
      span.setAttribute(ATTR_HTTP_RESPONSE_STATUS_CODE, statusCode);
      if (statusCode >= 400) span.setStatus({ code: SpanStatusCode.ERROR });
    });
  }

  /** The upstream could not be reached, or did not answer in time. */
  failed(call: UpstreamCall | null, error: UpstreamError): void {
    this.end(call, (span) => markFailed(span, { type: isTimeout(error) ? 'timeout' : (error.code ?? error.name) }));
  }

  private end(call: UpstreamCall | null, describe: (span: Span) => void): void {
    const span = call?.upstreamSpan;
    if (!span) return;
    call.upstreamSpan = undefined;
    describe(span);
    span.end();
  }
}
