import { describe, expect, it } from 'vitest';
import { tracingSettings } from '../../src/ops/tracing.js';

describe('whether the OTEL_* environment turns tracing on', () => {
  it('stays off without an OTLP endpoint, whatever else is set', () => {
    expect(tracingSettings({})).toBeUndefined();
    expect(tracingSettings({ OTEL_SERVICE_NAME: 'bff', OTEL_TRACES_SAMPLER: 'always_on' })).toBeUndefined();
  });

  it('exports to OTEL_EXPORTER_OTLP_ENDPOINT/v1/traces, or to OTEL_EXPORTER_OTLP_TRACES_ENDPOINT as given, and names no credentials', () => {
    expect(tracingSettings({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318/' })).toEqual({ endpoint: 'http://collector:4318/v1/traces' });
    expect(
      tracingSettings({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318', OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'https://user:pw@traces.example/ingest?key=k' }),
    ).toEqual({ endpoint: 'https://traces.example/ingest' });
  });

  it('is turned off by OTEL_SDK_DISABLED=true or an OTEL_TRACES_EXPORTER without otlp', () => {
    const endpoint = { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' };
    expect(tracingSettings({ ...endpoint, OTEL_SDK_DISABLED: 'TRUE' })).toBeUndefined();
    expect(tracingSettings({ ...endpoint, OTEL_TRACES_EXPORTER: 'none' })).toBeUndefined();
    expect(tracingSettings({ ...endpoint, OTEL_SDK_DISABLED: 'false', OTEL_TRACES_EXPORTER: 'console,otlp' })).toEqual({ endpoint: 'http://collector:4318/v1/traces' });
  });

  it('notes a protocol it will not follow: spans are sent as OTLP/HTTP JSON', () => {
    const endpoint = { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' };
    expect(tracingSettings({ ...endpoint, OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' })?.protocolIgnored).toBe('grpc');
    expect(tracingSettings({ ...endpoint, OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc', OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'http/json' })?.protocolIgnored).toBeUndefined();
  });
});
