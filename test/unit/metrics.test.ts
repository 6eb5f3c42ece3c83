import { Histogram, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { Metrics } from '../../src/ops/metrics.js';

/** The lines of one metric family in a Prometheus text exposition. */
function family(text: string, name: string): string[] {
  return text.split('\n').filter((line) => line.startsWith(name) || line.startsWith(`# HELP ${name} `) || line.startsWith(`# TYPE ${name} `));
}

describe('request metrics', () => {
  it("expose proxy durations exactly as prom-client's Histogram would", async () => {
    const metrics = new Metrics();
    const registry = new Registry();
    const reference = new Histogram({
      name: 'token_handler_proxy_duration_seconds',
      help: 'Time from request to response for proxied API calls, per upstream route (includes any refresh).',
      labelNames: ['route'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [registry],
    });
    const observations: Array<[string, number]> = [
      ['/api', 0.0004],
      ['/api', 0.001],
      ['/api', 0.0031],
      ['/api', 0.7],
      ['/api', 45],
      ['/other', 0.02],
    ];
    for (const [route, seconds] of observations) {
      metrics.proxied(route, seconds);
      reference.observe({ route }, seconds);
    }
    const name = 'token_handler_proxy_duration_seconds';
    expect(family((await metrics.exposition()).body, name)).toEqual(family(await registry.metrics(), name));
  });

  it('count requests by route group and status, cut-off responses apart', async () => {
    const metrics = new Metrics();
    metrics.request('api:/api', 200);
    metrics.request('api:/api', 200);
    metrics.request('api:/api', 'cut_off');
    metrics.request('auth', 302);
    const lines = family((await metrics.exposition()).body, 'token_handler_http_requests_total');
    expect(lines).toEqual([
      '# HELP token_handler_http_requests_total HTTP requests answered, by route group (auth, api:<prefix>, ops, other) and status code.',
      '# TYPE token_handler_http_requests_total counter',
      'token_handler_http_requests_total{group="api:/api",status="200"} 2',
      'token_handler_http_requests_total{group="api:/api",status="cut_off"} 1',
      'token_handler_http_requests_total{group="auth",status="302"} 1',
    ]);
  });
});
