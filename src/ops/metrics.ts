import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { FastifyInstance } from 'fastify';
import { AggregatorRegistry, Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { ProviderFailureKind } from '../oidc/errors.js';
import type { ConnectionEvents, RedisTopology } from '../state/redis/connection.js';

export type RefreshOutcome = 'success' | ProviderFailureKind;
export type LoginOutcome = 'success' | 'failure';
export type LogoutReason = 'user' | 'backchannel' | 'expired' | 'invalid_grant' | 'revoked';

const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

export interface MetricsOptions {
  /** The app's name: the `app` label of every series (added when scraped, never on the hot path). */
  app?: string;
  /** Live sessions, where the app's store can count them cheaply. */
  activeSessions?: () => Promise<number | undefined>;
}

/**
 * One app's Prometheus metrics, in a registry of its own (several instances in one
 * process — tests, the demo — never collide), every series labelled with the app's name.
 * Names are prefixed `token_handler_`. What belongs to the process (Node's own metrics,
 * the Redis connection) is `ProcessMetrics`'.
 */
export class Metrics {
  readonly registry = new Registry();
  private readonly httpRequests = new HotCounter(
    this.registry,
    'token_handler_http_requests_total',
    'HTTP requests answered, by route group (auth, api:<prefix>, ops, other) and status code.',
    'group',
    'status',
  );
  private readonly proxyDuration = new HotHistogram(
    this.registry,
    'token_handler_proxy_duration_seconds',
    'Time from request to response for proxied API calls, per upstream route (includes any refresh).',
    'route',
    LATENCY_BUCKETS,
  );
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
  private readonly apiTokenGrants = new Counter({
    name: 'token_handler_api_token_grants_total',
    help: 'Token-endpoint calls for per-API tokens (RFC 8707 resource refreshes, RFC 8693 exchanges), by route prefix, kind (resource, exchange) and outcome.',
    labelNames: ['route', 'kind', 'outcome'] as const,
    registers: [this.registry],
  });
  private readonly apiTokenDuration = new Histogram({
    name: 'token_handler_api_token_duration_seconds',
    help: 'Latency of token-endpoint calls for per-API tokens, by route prefix.',
    labelNames: ['route'] as const,
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });
  private readonly dpopNonceChallenges = new Counter({
    name: 'token_handler_dpop_nonce_challenges_total',
    help: "Upstream 401 use_dpop_nonce challenges on dpop: true routes, by route prefix and what was done: replayed (once, with the nonce) or passed_on (a second challenge, or a body too large to replay).",
    labelNames: ['route', 'action'] as const,
    registers: [this.registry],
  });
  private readonly requestAborts = new Counter({
    name: 'token_handler_request_aborts_total',
    help: 'Requests whose browser went away before it had sent the whole request body.',
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

  private readonly openSockets = new Gauge({
    name: 'token_handler_websockets_open',
    help: 'WebSockets open through API routes (browser and upstream both connected), by route prefix.',
    labelNames: ['route'] as const,
    registers: [this.registry],
  });
  private readonly socketMessages = new HotCounter(
    this.registry,
    'token_handler_websocket_messages_total',
    'WebSocket messages passed on, by route prefix and direction (in: browser to upstream, out: upstream to browser).',
    'route',
    'direction',
  );
  private readonly socketCloses = new Counter({
    name: 'token_handler_websocket_closes_total',
    help: 'WebSockets closed, by route prefix and reason (session_ended, token_expired, shutdown, browser, upstream, dead_peer, message_too_large).',
    labelNames: ['route', 'reason'] as const,
    registers: [this.registry],
  });
  private readonly streamEnds = new Counter({
    name: 'token_handler_streams_ended_total',
    help: 'Streamed API responses token-handler ended before the upstream did, by reason (session_ended, shutdown).',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });

  constructor(options: MetricsOptions = {}) {
    const { activeSessions } = options;
    if (options.app !== undefined) this.registry.setDefaultLabels({ app: options.app });
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

  /** `status` is the code sent, or `cut_off` for a response destroyed mid-stream. */
  request(group: string, status: number | 'cut_off'): void {
    this.httpRequests.inc(group, status);
  }

  proxied(route: string, seconds: number): void {
    this.proxyDuration.observe(route, seconds);
  }

  refreshAttempt(outcome: RefreshOutcome, seconds: number): void {
    this.refreshes.inc({ outcome });
    this.refreshDuration.observe(seconds);
  }

  /** A per-API token call (`route`: the route's prefix). */
  apiTokenGrant(route: string, kind: 'resource' | 'exchange', outcome: RefreshOutcome, seconds: number): void {
    this.apiTokenGrants.inc({ route, kind, outcome });
    this.apiTokenDuration.observe({ route }, seconds);
  }

  /** An upstream's DPoP nonce challenge (`route`: the route's prefix). */
  dpopNonceChallenge(route: string, action: 'replayed' | 'passed_on'): void {
    this.dpopNonceChallenges.inc({ route, action });
  }

  refreshJoined(): void {
    this.refreshJoins.inc();
  }

  requestAborted(): void {
    this.requestAborts.inc();
  }

  login(outcome: LoginOutcome): void {
    this.logins.inc({ outcome });
  }

  logout(reason: LogoutReason, count = 1): void {
    this.logouts.inc({ reason }, count);
  }

  webSocketOpened(route: string): void {
    this.openSockets.inc({ route });
  }

  webSocketClosed(route: string, reason: string): void {
    this.openSockets.dec({ route });
    this.socketCloses.inc({ route, reason });
  }

  webSocketMessage(route: string, direction: 'in' | 'out'): void {
    this.socketMessages.inc(route, direction);
  }

  streamEnded(reason: string): void {
    this.streamEnds.inc({ reason });
  }

  async exposition(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}

/**
 * The process's metrics: Node's own (CPU, memory, event loop) and the Redis connection's,
 * without an app label, and every app's, each series labelled with its app. What
 * `/metrics` serves.
 */
export class ProcessMetrics {
  readonly registry = new Registry();
  private readonly apps: Metrics[] = [];

  constructor(redis?: { topology: RedisTopology; events: Readonly<ConnectionEvents> }) {
    collectDefaultMetrics({ register: this.registry, prefix: 'token_handler_' });
    if (redis) this.redisMetrics(redis.topology, redis.events);
  }

  /** An app's metrics, exposed with the process's from now on. */
  add(metrics: Metrics): void {
    this.apps.push(metrics);
  }

  /** How Redis is reached, and its reconnects and failovers: counted by the connection, read when scraped. */
  private redisMetrics(topology: RedisTopology, events: Readonly<ConnectionEvents>): void {
    new Gauge({
      name: 'token_handler_redis_info',
      help: 'Always 1; the topology label says how Redis is reached (single, sentinel, cluster).',
      labelNames: ['topology'] as const,
      registers: [this.registry],
    }).set({ topology }, 1);
    const counted = (name: string, help: string, read: () => number) =>
      new Counter({
        name,
        help,
        registers: [this.registry],
        collect() {
          this.reset();
          this.inc(read());
        },
      });
    counted('token_handler_redis_reconnects_total', 'Reconnections to Redis begun after a dropped connection (a Cluster: node connections dropped).', () => events.reconnects);
    counted(
      'token_handler_redis_failovers_total',
      'Master changes seen: behind Sentinel, a connection to another master; on a Cluster, a slot refresh finding another set of masters.',
      () => events.failovers,
    );
  }

  async exposition(): Promise<{ contentType: string; body: string }> {
    const own = await this.registry.metrics();
    // The apps' registries hold the same families with another app label: merged into one
    // family each (a family may appear only once in an exposition).
    const apps =
      this.apps.length === 1
        ? await this.apps[0]!.registry.metrics()
        : await AggregatorRegistry.aggregate(await Promise.all(this.apps.map((app) => app.registry.getMetricsAsJSON()))).metrics();
    return { contentType: this.registry.contentType, body: `${own}${own.endsWith('\n') || own === '' ? '' : '\n'}${apps}` };
  }
}

/** `GET /metrics` on the main listener. */
export async function metricsRoute(app: FastifyInstance, options: { metrics: ProcessMetrics }): Promise<void> {
  app.get('/metrics', async (_request, reply) => {
    const { contentType, body } = await options.metrics.exposition();
    return reply.type(contentType).header('cache-control', 'no-store').send(body);
  });
}

/** `/metrics` on a separate port (`metrics.port`), so it need not be exposed publicly. */
export function createMetricsServer(metrics: ProcessMetrics, admin?: (request: IncomingMessage, response: ServerResponse) => boolean): Server {
  return createServer((request, response) => {
    if (admin?.(request, response)) return;
    if (request.method !== 'GET' || request.url?.split('?')[0] !== '/metrics') {
      response.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"not_found","error_description":"Only /metrics and /admin here."}');
      return;
    }
    metrics.exposition().then(
      ({ contentType, body }) => response.writeHead(200, { 'content-type': contentType, 'cache-control': 'no-store' }).end(body),
      () => response.writeHead(500).end(),
    );
  });
}

/** What prom-client's registry reads from a metric when it is scraped. */
interface ExposedMetric {
  name: string;
  help: string;
  type: 'counter' | 'histogram';
  aggregator: 'sum';
  values: Array<{ metricName?: string; labels: Record<string, string | number>; value: number }>;
}

/**
 * The two metrics every request touches, kept in plain numbers and handed to prom-client
 * only when scraped. prom-client's own Counter and Histogram hash their label set and
 * validate it on every call; on the proxy's hot path that was a measurable share of the
 * time a request costs (bench/README.md). The exposition is the same.
 */
class HotCounter {
  readonly type = 'counter';
  readonly aggregator = 'sum';
  /** first label value → second label value → count */
  private counts = new Map<string, Map<string | number, number>>();

  constructor(
    registry: Registry,
    readonly name: string,
    readonly help: string,
    private readonly firstLabel: string,
    private readonly secondLabel: string,
  ) {
    registry.registerMetric(this as never);
  }

  inc(first: string, second: string | number): void {
    let inner = this.counts.get(first);
    if (inner === undefined) {
      inner = new Map();
      this.counts.set(first, inner);
    }
    inner.set(second, (inner.get(second) ?? 0) + 1);
  }

  get(): ExposedMetric {
    const values: ExposedMetric['values'] = [];
    for (const [first, inner] of this.counts) {
      for (const [second, value] of inner) values.push({ labels: { [this.firstLabel]: first, [this.secondLabel]: String(second) }, value });
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  reset(): void {
    this.counts = new Map();
  }
}

/** A histogram with one label; see HotCounter. */
class HotHistogram {
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  private series = new Map<string, { buckets: Float64Array; sum: number; count: number }>();

  constructor(
    registry: Registry,
    readonly name: string,
    readonly help: string,
    private readonly label: string,
    private readonly upperBounds: readonly number[],
  ) {
    registry.registerMetric(this as never);
  }

  observe(labelValue: string, value: number): void {
    let series = this.series.get(labelValue);
    if (series === undefined) {
      series = { buckets: new Float64Array(this.upperBounds.length), sum: 0, count: 0 };
      this.series.set(labelValue, series);
    }
    // Per bucket, not cumulative: the exposition adds them up.
    const bounds = this.upperBounds;
    for (let i = 0; i < bounds.length; i++) {
      if (value <= bounds[i]!) {
        series.buckets[i]! += 1;
        break;
      }
    }
    series.sum += value;
    series.count += 1;
  }

  get(): ExposedMetric {
    const values: ExposedMetric['values'] = [];
    for (const [labelValue, { buckets, sum, count }] of this.series) {
      let cumulative = 0;
      this.upperBounds.forEach((bound, i) => {
        cumulative += buckets[i]!;
        values.push({ metricName: `${this.name}_bucket`, labels: { le: bound, [this.label]: labelValue }, value: cumulative });
      });
      values.push({ metricName: `${this.name}_bucket`, labels: { le: '+Inf', [this.label]: labelValue }, value: count });
      values.push({ metricName: `${this.name}_sum`, labels: { [this.label]: labelValue }, value: sum });
      values.push({ metricName: `${this.name}_count`, labels: { [this.label]: labelValue }, value: count });
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  reset(): void {
    this.series = new Map();
  }
}
