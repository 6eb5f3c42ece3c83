/**
 * The soak's "outside world" in a process of its own: the real oidc-provider from the test
 * harness (test/support/provider.ts) and the real upstream API that checks every bearer
 * token by introspection at that provider (test/support/upstream.ts).
 *
 * The provider can be stopped and started again on the same port with the same state
 * (`startProvider({ port, state })`: same grants, tokens, keys and clients), i.e. an
 * outage, not a mass revocation. Every refresh_token grant is attributed to its account
 * (each soak session logs in as its own account), so refreshes per session and any
 * reuse detection can be reported per session.
 */
import { performance } from 'node:perf_hooks';
import type { KoaContextWithOIDC } from 'oidc-provider';
import { startProvider, type TestProvider, type TokenRequestRecord } from '../../test/support/provider.js';
import { startUpstream, type Upstream } from '../../test/support/upstream.js';
import { serve } from '../../bench/lib/rpc.js';

export interface GrantEvent {
  /** Which provider incarnation answered (0 = before the outage, 1 = after the restart). */
  incarnation: number;
  grantType: string;
  accountId?: string;
  grantId?: string;
  /** Rotation count of the refresh token presented (refresh_token grants). */
  rotations?: number;
  /** Date.now() when the grant handler finished (at = doneAt; kept apart for clarity of the report). */
  at: number;
  doneAt: number;
  status: number;
  error?: string;
  errorDescription?: string;
  /** Whether the response reached the client (false: connection closed under it, e.g. by the outage). */
  delivered?: boolean;
}

export interface IdpStartParams {
  redirectUris: string[];
  accessTokenTtlSeconds: number;
}

export interface IdpInfo {
  issuer: string;
  port: number;
  clientId: string;
  clientSecret: string;
  upstreamUrl: string;
}

export interface IdpReport {
  grantEvents: GrantEvent[];
  /** The harness's own `tokenRequests` of every incarnation, concatenated. */
  tokenRequests: Array<TokenRequestRecord & { incarnation: number }>;
  serverErrors: string[];
  introspectionCalls: number;
  upstreamRequests: number;
  lifecycle: Array<{ what: 'started' | 'stopped'; at: number }>;
  /** Grants the provider revoked (reuse detection revokes the whole grant). */
  revocations: Array<{ incarnation: number; grantId: string; accountId?: string; at: number }>;
  eventLoopUtilization: number;
  cpuSeconds: number;
}

let params: IdpStartParams | undefined;
let provider: TestProvider | undefined;
let upstream: Upstream | undefined;
const incarnations: TestProvider[] = [];
const grantEvents: GrantEvent[] = [];
const lifecycle: IdpReport['lifecycle'] = [];
const revocations: IdpReport['revocations'] = [];
let upstreamRequests = 0;
let elu = performance.eventLoopUtilization();
let cpu = process.cpuUsage();

function attachAccounting(p: TestProvider, incarnation: number): void {
  // Koa composed the middleware when the harness built its listener: listen to the provider's events instead.
  const recordGrant = (ctx: KoaContextWithOIDC, err?: { error?: string; error_description?: string; statusCode?: number; status?: number }) => {
    const event: GrantEvent = { incarnation, grantType: 'unknown', at: Date.now(), doneAt: Date.now(), status: err ? (err.statusCode ?? err.status ?? 500) : 200 };
    try {
      const oidc = ctx.oidc;
      event.grantType = String(oidc?.params?.grant_type ?? event.grantType);
      const entities = (oidc?.entities ?? {}) as Record<string, { accountId?: string; grantId?: string; rotations?: number } | undefined>;
      const token = entities.RotatedRefreshToken ?? entities.RefreshToken ?? entities.AuthorizationCode;
      const accountId = token?.accountId ?? entities.Account?.accountId;
      if (accountId !== undefined) event.accountId = accountId;
      if (token?.grantId !== undefined) event.grantId = token.grantId;
      if (typeof token?.rotations === 'number') event.rotations = token.rotations;
    } catch {
      // context not (fully) built: keep what we have
    }
    if (err?.error) event.error = err.error;
    if (err?.error_description) event.errorDescription = err.error_description;
    grantEvents.push(event);
    // The client may have given up already (its timeout): then the answer can never arrive.
    const res = ctx.res;
    if (res.writableFinished) event.delivered = true;
    else if (res.destroyed || !res.socket || res.socket.destroyed) event.delivered = false;
    else res.once('close', () => (event.delivered = res.writableFinished));
  };
  p.provider.on('grant.success', (ctx: KoaContextWithOIDC) => recordGrant(ctx));
  p.provider.on('grant.error', (ctx: KoaContextWithOIDC, err: { error?: string }) => recordGrant(ctx, err));
  p.provider.on('grant.revoked', (ctx: KoaContextWithOIDC, grantId: string) => {
    let accountId: string | undefined;
    try {
      accountId = (ctx.oidc?.entities as Record<string, { accountId?: string } | undefined> | undefined)?.RefreshToken?.accountId;
    } catch {
      // not known
    }
    revocations.push({ incarnation, grantId, at: Date.now(), ...(accountId ? { accountId } : {}) });
  });
}

async function startIncarnation(port?: number): Promise<TestProvider> {
  if (!params) throw new Error('not configured');
  const p = await startProvider({
    redirectUris: params.redirectUris,
    accessTokenTtlSeconds: params.accessTokenTtlSeconds,
    rotateRefreshToken: true,
    ...(port !== undefined ? { port } : {}),
    ...(provider ? { state: provider.state } : {}),
  });
  attachAccounting(p, incarnations.length);
  incarnations.push(p);
  provider = p;
  lifecycle.push({ what: 'started', at: Date.now() });
  return p;
}

serve({
  async start(startParams: IdpStartParams): Promise<IdpInfo> {
    params = startParams;
    const p = await startIncarnation();
    upstream = await startUpstream({
      introspectionEndpoint: p.endpoints.introspection,
      clientId: p.clients.api.clientId,
      clientSecret: p.clients.api.clientSecret,
      cacheTokens: true,
    });
    return { issuer: p.issuer, port: p.port, clientId: p.clients.basic.clientId, clientSecret: p.clients.basic.clientSecret, upstreamUrl: upstream.url };
  },
  /** Start measuring this process's load (called when the load phase begins). */
  markLoadStart() {
    elu = performance.eventLoopUtilization();
    cpu = process.cpuUsage();
  },
  /**
   * The outage: close the listener and every open connection. `graceful` first drains the token
   * endpoint like a provider shutting down cleanly: new token requests get their connection closed
   * unanswered (the provider never sees them, nothing is spent), the ones already inside the
   * provider finish and are answered, then the provider stops. Without it the stop is a crash: a
   * refresh the provider completes while its connection is cut is lost to token-handler.
   */
  async stopProvider(options: { graceful: boolean }) {
    if (!provider) throw new Error('provider not started');
    const p = provider;
    let drained: { ms: number; completedWhileDraining: number } | undefined;
    if (options.graceful && typeof p.setFault === 'function') {
      const tokenPath = new URL(p.endpoints.token).pathname;
      p.setFault(tokenPath, { reset: true });
      const started = Date.now();
      const before = grantEvents.length;
      let seen = grantEvents.length;
      let lastChange = started;
      // Until no token request has completed for 300 ms (at least 500 ms, at most 3 s).
      for (;;) {
        await new Promise((resolve) => setTimeout(resolve, 50));
        const now = Date.now();
        if (grantEvents.length !== seen) {
          seen = grantEvents.length;
          lastChange = now;
        }
        if (now - started >= 3000 || (now - started >= 500 && now - lastChange >= 300)) break;
      }
      drained = { ms: Date.now() - started, completedWhileDraining: grantEvents.length - before };
    }
    await p.stop();
    lifecycle.push({ what: 'stopped', at: Date.now() });
    return { at: Date.now(), graceful: drained !== undefined, ...(drained ? { drained } : {}) };
  },
  /** Same port, same state: grants, tokens, keys and clients are kept. */
  async restartProvider() {
    if (!provider) throw new Error('provider not started');
    const p = await startIncarnation(provider.port);
    return { at: Date.now(), issuer: p.issuer };
  },
  /**
   * Holds back the provider's token answers (it has issued the tokens; the answer leaves
   * later) by a random time in [minMs, maxMs]; null ends it. For the logout-during-refresh phase.
   */
  holdBackTokenAnswers(range: { minMs: number; maxMs: number } | null) {
    if (!provider) throw new Error('provider not started');
    const tokenPath = new URL(provider.endpoints.token).pathname;
    provider.setAnswerDelay(tokenPath, range ? () => range.minMs + Math.random() * (range.maxMs - range.minMs) : 0);
  },
  report(): IdpReport {
    const used = process.cpuUsage(cpu);
    return {
      grantEvents,
      tokenRequests: incarnations.flatMap((p, incarnation) => p.tokenRequests.map((r) => ({ ...r, incarnation }))),
      serverErrors: incarnations.flatMap((p) => p.serverErrors.map((e) => (e instanceof Error ? `${e.name}: ${e.message}` : String(e)))),
      introspectionCalls: upstream?.introspectionCalls() ?? 0,
      upstreamRequests: upstreamRequests + (upstream?.requests.length ?? 0),
      lifecycle,
      revocations,
      eventLoopUtilization: performance.eventLoopUtilization(elu).utilization,
      cpuSeconds: (used.user + used.system) / 1e6,
    };
  },
  async shutdown() {
    await upstream?.close();
    await provider?.stop();
  },
});

// The harness keeps every request it answered (the upstream with headers and bodies): keep memory flat.
setInterval(() => {
  for (const p of incarnations) p.requests.length = 0;
  if (upstream) {
    upstreamRequests += upstream.requests.length;
    upstream.requests.length = 0;
  }
}, 1000).unref();
