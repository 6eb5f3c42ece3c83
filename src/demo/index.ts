/**
 * Demo mode: token-handler in front of an embedded OpenID provider and a small API,
 * all on 127.0.0.1, with a demo page at `/`. `npm start` without configuration and
 * `token-handler demo` run it (src/demo/cli.ts); tests start it in-process on free ports.
 * Development only: the provider accepts any user name and password, and everything
 * is plain http.
 */
import { randomBytes } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import type { DestinationStream } from 'pino';
import { buildApp } from '../app.js';
import { parseConfig } from '../config/load.js';
import type { LogLevel } from '../config/types.js';
import { startDemoApi, type DemoApi, type DemoApiRequest } from './api.js';
import { availablePort, LOOPBACK, loopbackUrl } from './net.js';
import { demoPagePlugin } from './page.js';
import { DEMO_STRONG_ACR, loadOidcProvider, startDemoProvider, type DemoProvider, type TokenGrantRecord } from './provider.js';

export { DemoUnavailableError } from './provider.js';
export type { DemoApiRequest } from './api.js';
export type { TokenGrantRecord } from './provider.js';

export const DEFAULT_DEMO_PORT = 8080;
export const DEFAULT_ACCESS_TOKEN_SECONDS = 30;

export interface DemoOptions {
  /** token-handler's port on 127.0.0.1; 0 = a free port. Default 8080. */
  port?: number;
  /** The provider's port; default 0 (a free port). */
  providerPort?: number;
  /** The demo API's port; default 0 (a free port). */
  apiPort?: number;
  /** Access-token life at the provider, in seconds. Default 30. */
  accessTokenSeconds?: number;
  /** token-handler refreshes this many seconds before expiry. Default: a sixth of the token life, at most 5. */
  refreshSkewSeconds?: number;
  /** token-handler's log level. Default warn. */
  logLevel?: LogLevel;
  /** Where token-handler logs go (default stdout). */
  logStream?: DestinationStream;
}

export interface DemoStack {
  /** The demo page: `http://127.0.0.1:<port>/`. */
  url: string;
  /** token-handler's public URL (no trailing slash). */
  publicUrl: string;
  providerUrl: string;
  apiUrl: string;
  accessTokenSeconds: number;
  refreshSkewSeconds: number;
  app: FastifyInstance;
  /** Every access, refresh and ID token the provider issued (for leak checks). */
  issuedTokens(): string[];
  /** Every token-endpoint call the provider answered (grant type, status, time). */
  tokenRequests(): TokenGrantRecord[];
  /** Every request the demo API answered. */
  apiRequests(): DemoApiRequest[];
  close(): Promise<void>;
}

export async function startDemo(options: DemoOptions = {}): Promise<DemoStack> {
  const accessTokenSeconds = options.accessTokenSeconds ?? DEFAULT_ACCESS_TOKEN_SECONDS;
  const refreshSkewSeconds = options.refreshSkewSeconds ?? Math.min(5, Math.floor(accessTokenSeconds / 6));
  await loadOidcProvider();

  // token-handler's port first: the provider must know the redirect URI, and a busy
  // port should be reported before anything else starts.
  const port = await availablePort(options.port ?? DEFAULT_DEMO_PORT);
  const publicUrl = loopbackUrl(port);
  const bff = {
    clientId: 'demo-bff',
    clientSecret: randomBytes(24).toString('base64url'),
    redirectUri: `${publicUrl}/auth/callback`,
    // The demo page says it when the browser comes back from signing out.
    postLogoutRedirectUri: `${publicUrl}/?signed-out`,
  };
  const apiClient = { clientId: 'demo-api', clientSecret: randomBytes(24).toString('base64url') };

  const closers: Array<() => Promise<void>> = [];
  const closeAll = async () => {
    for (const close of closers.splice(0).reverse()) await close().catch(() => undefined);
  };

  try {
    const provider: DemoProvider = await startDemoProvider({
      port: options.providerPort ?? 0,
      accessTokenSeconds,
      bff,
      api: apiClient,
    });
    closers.push(provider.close);

    const api: DemoApi = await startDemoApi({
      port: options.apiPort ?? 0,
      introspectionEndpoint: provider.introspectionEndpoint,
      ...apiClient,
    });
    closers.push(api.close);

    const config = parseConfig({
      listen: { host: LOOPBACK, port },
      publicUrl,
      oidc: {
        issuer: provider.issuer,
        clientId: bff.clientId,
        clientSecret: bff.clientSecret,
        scopes: ['openid', 'profile', 'email', 'offline_access'],
        refreshSkewSeconds,
        postLogoutRedirectUri: bff.postLogoutRedirectUri,
      },
      // A new secret each start: sessions of an earlier run simply end. The memory store, so
      // the page can list the user's sessions (the cookie store keeps no list).
      session: { store: 'memory', secrets: [randomBytes(32).toString('base64url')] },
      // The provider's cookies share the host 127.0.0.1: send the API none of them.
      routes: [
        // Route policies: /api/admin/hello for users in the admin group, /api/secure/hello after a stronger sign-in.
        { prefix: '/api/admin', upstream: api.url, stripCookies: 'all', require: { claims: { groups: ['admin'] } } },
        { prefix: '/api/secure', upstream: api.url, stripCookies: 'all', require: { acr: [DEMO_STRONG_ACR] } },
        // The live panel's WebSocket: closed with 4401 when the session ends.
        { prefix: '/api/live', upstream: api.url, stripCookies: 'all', websocket: true },
        { prefix: '/api', upstream: api.url, stripCookies: 'all' },
      ],
      logging: { level: options.logLevel ?? 'warn' },
      // One local port for everything: the demo binds the loopback interface only.
      metrics: { onMainListener: true },
    });
    const app = await buildApp(config, {
      plugins: [demoPagePlugin(publicUrl, accessTokenSeconds)],
      waitForProvider: true,
      ...(options.logStream ? { logStream: options.logStream } : {}),
    });
    closers.push(() => app.close());
    await app.listen({ host: LOOPBACK, port });

    return {
      url: `${publicUrl}/`,
      publicUrl,
      providerUrl: provider.issuer,
      apiUrl: api.url,
      accessTokenSeconds,
      refreshSkewSeconds,
      app,
      issuedTokens: provider.issuedTokens,
      tokenRequests: provider.tokenRequests,
      apiRequests: api.requests,
      close: closeAll,
    };
  } catch (err) {
    await closeAll();
    throw err;
  }
}
