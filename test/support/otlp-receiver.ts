/**
 * A real OTLP/HTTP traces receiver (node:http on 127.0.0.1), as an OpenTelemetry collector
 * would listen: accepts `POST /v1/traces` with OTLP JSON (gzip or not), answers 200 `{}`,
 * and keeps every span it received, flattened, plus the raw request bodies for leak scans.
 */
import { createServer } from 'node:http';
import { buffer } from 'node:stream/consumers';
import { gunzipSync } from 'node:zlib';
import { closeServer, listen, originOf } from './ports.js';

/** OTLP JSON's value encoding (opentelemetry-proto's AnyValue). */
interface AnyValue {
  stringValue?: string;
  intValue?: string | number;
  doubleValue?: number;
  boolValue?: boolean;
  arrayValue?: { values?: AnyValue[] };
}

interface KeyValue {
  key: string;
  value: AnyValue;
}

interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  attributes?: KeyValue[];
  status?: { code?: number; message?: string };
}

interface ExportTraceServiceRequest {
  resourceSpans?: Array<{ resource?: { attributes?: KeyValue[] }; scopeSpans?: Array<{ spans?: OtlpSpan[] }> }>;
}

/** One received span, its attributes and its resource's as plain values. */
export interface ReceivedSpan {
  traceId: string;
  spanId: string;
  /** Undefined for a root span. */
  parentSpanId: string | undefined;
  name: string;
  kind: 'internal' | 'server' | 'client' | 'producer' | 'consumer' | 'unspecified';
  attributes: Record<string, unknown>;
  resource: Record<string, unknown>;
  status: { code: 'unset' | 'ok' | 'error'; message?: string };
}

export interface OtlpReceiver {
  /** The base URL, as OTEL_EXPORTER_OTLP_ENDPOINT takes it (the exporter adds /v1/traces). */
  url: string;
  spans: ReceivedSpan[];
  /** Every export request body, decoded, for scans. */
  bodies: string[];
  /** What came to a path other than POST /v1/traces. */
  strayRequests: string[];
  close(): Promise<void>;
}

const KINDS = ['unspecified', 'internal', 'server', 'client', 'producer', 'consumer'] as const;
const STATUS = ['unset', 'ok', 'error'] as const;

export async function startOtlpReceiver(): Promise<OtlpReceiver> {
  const spans: ReceivedSpan[] = [];
  const bodies: string[] = [];
  const strayRequests: string[] = [];
  const server = createServer((req, res) => {
    buffer(req)
      .then((raw) => {
        if (req.method !== 'POST' || req.url !== '/v1/traces') {
          strayRequests.push(`${req.method} ${req.url}`);
          res.writeHead(404).end();
          return;
        }
        const text = (req.headers['content-encoding'] === 'gzip' ? gunzipSync(raw) : raw).toString('utf8');
        if (!String(req.headers['content-type']).startsWith('application/json')) {
          strayRequests.push(`POST /v1/traces as ${req.headers['content-type']}`);
          res.writeHead(415).end();
          return;
        }
        bodies.push(text);
        spans.push(...flatten(JSON.parse(text) as ExportTraceServiceRequest));
        res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      })
      .catch(() => res.writeHead(400).end());
  });
  const port = await listen(server, 0);
  return { url: originOf(port), spans, bodies, strayRequests, close: () => closeServer(server) };
}

function flatten(request: ExportTraceServiceRequest): ReceivedSpan[] {
  return (request.resourceSpans ?? []).flatMap((resourceSpans) => {
    const resource = plain(resourceSpans.resource?.attributes);
    return (resourceSpans.scopeSpans ?? []).flatMap((scope) =>
      (scope.spans ?? []).map((span) => ({
        traceId: span.traceId,
        spanId: span.spanId,
        parentSpanId: span.parentSpanId ? span.parentSpanId : undefined,
        name: span.name,
        kind: KINDS[span.kind] ?? 'unspecified',
        attributes: plain(span.attributes),
        resource,
        status: { code: STATUS[span.status?.code ?? 0] ?? 'unset', ...(span.status?.message ? { message: span.status.message } : {}) },
      })),
    );
  });
}

function plain(attributes: KeyValue[] | undefined): Record<string, unknown> {
  return Object.fromEntries((attributes ?? []).map(({ key, value }) => [key, valueOf(value)]));
}

function valueOf(value: AnyValue): unknown {
  if (value.stringValue !== undefined) return value.stringValue;
  if (value.intValue !== undefined) return Number(value.intValue);
  if (value.doubleValue !== undefined) return value.doubleValue;
  if (value.boolValue !== undefined) return value.boolValue;
  if (value.arrayValue !== undefined) return (value.arrayValue.values ?? []).map(valueOf);
  return undefined;
}
