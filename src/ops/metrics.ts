import { createServer, type Server } from 'node:http';
import type { FastifyInstance } from 'fastify';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { ProviderFailureKind } from '../oidc/errors.js';

export type RefreshOutcome = 'success' | ProviderFailureKind;
export type LoginOutcome = 'success' | 'failure';
export type LogoutReason = 'user' | 'backchannel' | 'expired' | 'invalid_grant';

const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/**
 * token-handler's Prometheus metrics, in a registry of its own (several apps in one
 * process — tests, the demo — never collide). Names are prefixed `token_handler_`.
 */
export class Metrics {
  readonly registry = new Registry();
  private readonly httpRequests = new Counter({
    name: 'token_handler_http_requests_total',
    help: 'HTTP requests answered, by route group (auth, api:<prefix>, ops, other) and status code.',
    labelNames: ['group', 'status'] as const,
    registers: [this.registry],
  });
  private readonly proxyDuration = new Histogram({
    name: 'token_handler_proxy_duration_seconds',
    help: 'Time from request to response for proxied API calls, per upstream route (includes any refresh).',
    labelNames: ['route'] as const,
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });
  private readonly refreshes = new Counter({
    name: 'token_handler_refresh_attempts_total',
    help: 'Token-endpoint refresh calls by outcome (success, invalid_grant, transient, config_fault, invalid_response).',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });
  private readonly refreshDuration = new Histogram({
    name: 'token_handler_refresh_duration_seconds',
    help: 'Latency of refresh calls to the provider.',
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });
  private readonly refreshJoins = new Counter({
    name: 'token_handler_refresh_joins_total',
    help: "Requests that used another request's refresh (single-flight join or remembered result) instead of calling the provider.",
    registers: [this.registry],
  });
  private readonly logins = new Counter({
    name: 'token_handler_logins_total',
    help: 'Completed logins (callbacks) by outcome.',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });
  private readonly logouts = new Counter({
    name: 'token_handler_logouts_total',
    help: 'Ended sessions by reason (user, backchannel, expired, invalid_grant).',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });

  constructor(activeSessions?: () => Promise<number | undefined>) {
    collectDefaultMetrics({ register: this.registry, prefix: 'token_handler_' });
    if (activeSessions) {
      new Gauge({
        name: 'token_handler_active_sessions',
        help: 'Sessions held by the store (memory store only; cookie and redis stores cannot count cheaply).',
        registers: [this.registry],
        async collect() {
          const count = await activeSessions();
          if (count !== undefined) this.set(count);
        },
      });
    }
  }

  /** Labelled children, kept: resolving labels on every request is measurable on the hot path. */
  private readonly requestChildren = new Map<string, { inc(): void }>();
  private readonly proxyChildren = new Map<string, { observe(value: number): void }>();

  /** `status` is the code sent, or `cut_off` for a response destroyed mid-stream. */
  request(group: string, status: number | 'cut_off'): void {
    const key = `${group} ${status}`;
    let child = this.requestChildren.get(key);
    if (!child) {
      child = this.httpRequests.labels({ group, status: String(status) });
      this.requestChildren.set(key, child);
    }
    child.inc();
  }

  proxied(route: string, seconds: number): void {
    let child = this.proxyChildren.get(route);
    if (!child) {
      child = this.proxyDuration.labels({ route });
      this.proxyChildren.set(route, child);
    }
    child.observe(seconds);
  }

  refreshAttempt(outcome: RefreshOutcome, seconds: number): void {
    this.refreshes.inc({ outcome });
    this.refreshDuration.observe(seconds);
  }

  refreshJoined(): void {
    this.refreshJoins.inc();
  }

  login(outcome: LoginOutcome): void {
    this.logins.inc({ outcome });
  }

  logout(reason: LogoutReason, count = 1): void {
    this.logouts.inc({ reason }, count);
  }

  async exposition(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}

/** `GET /metrics` on the main listener. */
export async function metricsRoute(app: FastifyInstance, options: { metrics: Metrics }): Promise<void> {
  app.get('/metrics', async (_request, reply) => {
    const { contentType, body } = await options.metrics.exposition();
    return reply.type(contentType).header('cache-control', 'no-store').send(body);
  });
}

/** `/metrics` on a separate port (`metrics.port`), so it need not be exposed publicly. */
export function createMetricsServer(metrics: Metrics): Server {
  return createServer((request, response) => {
    if (request.method !== 'GET' || request.url?.split('?')[0] !== '/metrics') {
      response.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"not_found","error_description":"Only /metrics here."}');
      return;
    }
    metrics.exposition().then(
      ({ contentType, body }) => response.writeHead(200, { 'content-type': contentType, 'cache-control': 'no-store' }).end(body),
      () => response.writeHead(500).end(),
    );
  });
}
