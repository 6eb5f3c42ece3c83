import { diag, DiagLogLevel, SpanKind, SpanStatusCode, context, trace, type Attributes, type Span, type TextMapPropagator, type Tracer } from '@opentelemetry/api';
import { ATTR_ERROR_TYPE, ATTR_SERVICE_NAME } from '@opentelemetry/semantic-conventions';
import type { FastifyBaseLogger } from 'fastify';

export { SpanKind };

/** What the spans of this process are made with while tracing is on. */
export interface ActiveTracing {
  readonly tracer: Tracer;
  /** W3C Trace Context only: what is read from browsers and written to upstreams. */
  readonly propagator: TextMapPropagator;
}

/** A started tracing SDK; `shutdown` exports what is left and stops it. */
export interface Tracing extends ActiveTracing {
  shutdown(): Promise<void>;
}

/** Where spans go, when the OTEL_* variables ask for them. */
export interface TracingSettings {
  /** The OTLP/HTTP traces URL, without credentials or query, for the start-up line. */
  endpoint: string;
  /** Set when OTEL_EXPORTER_OTLP_*PROTOCOL asks for something other than what is sent (JSON). */
  protocolIgnored?: string;
}

const DEFAULT_SERVICE_NAME = 'token-handler';

/**
 * The SDK of this process, shared by every app built in it (OpenTelemetry's context and
 * tracer registration are process-wide); undefined while tracing is off, which is what
 * every wrapper checks first, so a process without tracing makes no span at all.
 */
let sdk: { tracing: Tracing; users: number; stop: () => Promise<void> } | undefined;

/** The tracer and propagator while tracing is on; undefined otherwise. */
export function activeTracing(): ActiveTracing | undefined {
  return sdk?.tracing;
}

/**
 * Tracing is on when an OTLP endpoint is configured (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or
 * OTEL_EXPORTER_OTLP_ENDPOINT), unless OTEL_SDK_DISABLED is true or OTEL_TRACES_EXPORTER
 * names no `otlp` exporter (e.g. `none`): an unconfigured service never starts the SDK.
 */
export function tracingSettings(env: NodeJS.ProcessEnv): TracingSettings | undefined {
  if (env.OTEL_SDK_DISABLED?.trim().toLowerCase() === 'true') return undefined;
  const exporters = env.OTEL_TRACES_EXPORTER?.trim();
  if (exporters && !exporters.split(',').some((name) => name.trim() === 'otlp')) return undefined;
  const tracesEndpoint = env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT?.trim();
  const baseEndpoint = env.OTEL_EXPORTER_OTLP_ENDPOINT?.trim();
  const endpoint = tracesEndpoint || (baseEndpoint ? `${baseEndpoint.replace(/\/+$/, '')}/v1/traces` : undefined);
  if (!endpoint) return undefined;
  const protocol = (env.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL ?? env.OTEL_EXPORTER_OTLP_PROTOCOL)?.trim();
  return { endpoint: withoutSecrets(endpoint), ...(protocol && protocol !== 'http/json' ? { protocolIgnored: protocol } : {}) };
}

/**
 * Starts the OpenTelemetry SDK when the OTEL_* environment variables configure it, else
 * returns undefined without loading it. The SDK reads the rest of its settings itself
 * (sampler, batch delays, exporter headers and timeout); OTEL_SERVICE_NAME defaults to
 * token-handler.
 */
export async function startTracing(logger: FastifyBaseLogger): Promise<Tracing | undefined> {
  const settings = tracingSettings(process.env);
  if (!settings) return undefined;
  const running = joinRunningSdk();
  if (running) return running;
  // Loaded only now: a service without tracing never loads the SDK.
  const [{ NodeTracerProvider, BatchSpanProcessor }, { OTLPTraceExporter }, { defaultResource, detectResources, envDetector, resourceFromAttributes }, { W3CTraceContextPropagator }] =
    await Promise.all([
      import('@opentelemetry/sdk-trace-node'),
      import('@opentelemetry/exporter-trace-otlp-http'),
      import('@opentelemetry/resources'),
      import('@opentelemetry/core'),
    ]);
  // Another app of this process may have started it while the SDK was loading.
  const started = joinRunningSdk();
  if (started) return started;
  // Export failures reach the log (the SDK is silent otherwise); its diagnostics never carry span data.
  diag.setLogger(
    {
      error: (message) => logger.warn({ otel: message }, 'tracing: OpenTelemetry SDK problem (e.g. a failed span export)'),
      warn: (message) => logger.warn({ otel: message }, 'tracing: OpenTelemetry SDK problem (e.g. a failed span export)'),
      info: () => undefined,
      debug: () => undefined,
      verbose: () => undefined,
    },
    { logLevel: DiagLogLevel.WARN, suppressOverrideMessage: true },
  );
  const resource = defaultResource()
    .merge(resourceFromAttributes({ [ATTR_SERVICE_NAME]: DEFAULT_SERVICE_NAME }))
    .merge(detectResources({ detectors: [envDetector] }));
  const provider = new NodeTracerProvider({ resource, spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter())] });
  // The context manager (AsyncLocalStorage) only: propagation is done with our own W3C propagator.
  provider.register({ propagator: null });
  const tracing: Tracing = {
    tracer: provider.getTracer('token-handler'),
    propagator: new W3CTraceContextPropagator(),
    shutdown: async () => {
      if (!sdk || --sdk.users > 0) return;
      const { stop } = sdk;
      sdk = undefined;
      await stop();
    },
  };
  sdk = {
    tracing,
    users: 1,
    stop: async () => {
      await provider.shutdown().catch((err: unknown) => logger.warn({ err: err instanceof Error ? err.message : String(err) }, 'tracing: flushing the last spans failed'));
      trace.disable();
      context.disable();
      diag.disable();
    },
  };
  logger.info({ endpoint: settings.endpoint, serviceName: resource.attributes[ATTR_SERVICE_NAME] }, 'tracing on: spans are exported over OTLP/HTTP (JSON)');
  if (settings.protocolIgnored) {
    logger.warn({ protocol: settings.protocolIgnored }, 'tracing: this build sends OTLP/HTTP JSON only; OTEL_EXPORTER_OTLP_PROTOCOL is not followed');
  }
  return tracing;
}

function joinRunningSdk(): Tracing | undefined {
  if (!sdk) return undefined;
  sdk.users++;
  return sdk.tracing;
}

/** How a failure is shown on a span: a type always, a message only where it is known to hold no secret. */
export type FailureDescription = (err: unknown) => { type: string; message?: string };

const byName: FailureDescription = (err) => ({ type: err instanceof Error ? err.name : 'unknown' });

/**
 * Runs `call` in a span (active for what it calls, ended when it settles) while tracing is
 * on; otherwise just runs it. Failures set the span's status and `error.type`, never the
 * exception itself: its message or stack could quote a token.
 */
export function inSpan<T>(
  name: string,
  kind: SpanKind,
  attributes: Attributes,
  call: (span: Span | undefined) => Promise<T>,
  describe: FailureDescription = byName,
): Promise<T> {
  const tracer = sdk?.tracing.tracer;
  if (!tracer) return call(undefined);
  return tracer.startActiveSpan(name, { kind, attributes }, async (span) => {
    try {
      return await call(span);
    } catch (err) {
      markFailed(span, describe(err));
      throw err;
    } finally {
      span.end();
    }
  });
}

/** Marks a span failed with a described failure. */
export function markFailed(span: Span, failure: { type: string; message?: string }): void {
  span.setAttribute(ATTR_ERROR_TYPE, failure.type);
  span.setStatus(failure.message === undefined ? { code: SpanStatusCode.ERROR } : { code: SpanStatusCode.ERROR, message: failure.message });
}

/** A URL's path: query strings can carry secrets (an authorization code, an API key). */
export function pathOf(url: string): string {
  const query = url.indexOf('?');
  return query === -1 ? url : url.slice(0, query);
}

function withoutSecrets(url: string): string {
  try {
    const parsed = new URL(url);
    return `${parsed.protocol}//${parsed.host}${parsed.pathname}`;
  } catch {
    return '(not a URL)';
  }
}
