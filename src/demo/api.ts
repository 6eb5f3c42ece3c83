/**
 * The demo's upstream API (node:http on 127.0.0.1). It trusts nothing but a bearer
 * token that the provider's introspection endpoint calls active, and answers JSON.
 * It never echoes the token.
 *
 *   GET /hello   → { message, sub, serverTime, tokenExpiresInSeconds, scope }
 *   a WebSocket upgrade (any path) → a live feed: `{ type: "tick", n, sub, serverTime }`
 *                   every second, and `{ type: "echo", data }` for each message it gets
 *   anything else → 404 { error: "not_found" }
 * No or inactive token → 401 { error: "invalid_token" } with WWW-Authenticate.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import type { Duplex } from 'node:stream';
import { closeServer, listenLoopback, loopbackUrl } from './net.js';

export interface DemoApiOptions {
  port: number;
  introspectionEndpoint: string;
  clientId: string;
  clientSecret: string;
}

/** One request the API answered. */
export interface DemoApiRequest {
  method: string;
  path: string;
  status: number;
  sub?: string;
  at: number;
}

export interface DemoApi {
  url: string;
  requests(): DemoApiRequest[];
  close(): Promise<void>;
}

const KEEP_REQUESTS = 1000;

/** What the demo uses of `ws` (the WebSocket library @fastify/http-proxy brings along). */
interface LiveSocket {
  readonly readyState: number;
  send(data: string): void;
  on(event: 'message', listener: (data: Buffer) => void): void;
  on(event: 'close', listener: () => void): void;
}
interface LiveServer {
  handleUpgrade(request: IncomingMessage, socket: Duplex, head: Buffer, done: (ws: LiveSocket) => void): void;
  clients: Set<LiveSocket & { terminate(): void }>;
}

/** `ws` as @fastify/http-proxy resolves it: token-handler has no dependency of its own on it. */
function webSocketServer(): LiveServer {
  const fromProxy = createRequire(createRequire(import.meta.url).resolve('@fastify/http-proxy'));
  const { WebSocketServer } = fromProxy('ws') as { WebSocketServer: new (options: { noServer: true }) => LiveServer };
  return new WebSocketServer({ noServer: true });
}

export async function startDemoApi(options: DemoApiOptions): Promise<DemoApi> {
  const requests: DemoApiRequest[] = [];
  const basic = `Basic ${Buffer.from(`${encodeURIComponent(options.clientId)}:${encodeURIComponent(options.clientSecret)}`).toString('base64')}`;

  async function introspect(token: string): Promise<Record<string, unknown>> {
    const response = await fetch(options.introspectionEndpoint, {
      method: 'POST',
      headers: { authorization: basic, 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
      body: new URLSearchParams({ token }).toString(),
      signal: AbortSignal.timeout(5000),
    });
    if (!response.ok) throw new Error(`introspection answered ${response.status}`);
    return (await response.json()) as Record<string, unknown>;
  }

  async function handle(req: IncomingMessage, res: ServerResponse, record: DemoApiRequest): Promise<void> {
    const send = (status: number, body: unknown, headers: Record<string, string> = {}) => {
      record.status = status;
      const payload = JSON.stringify(body, null, 2);
      res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store', ...headers });
      res.end(payload);
    };
    const token = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '')?.[1];
    if (!token) {
      send(401, { error: 'invalid_token', error_description: 'No bearer token.' }, { 'www-authenticate': 'Bearer' });
      return;
    }
    let claims: Record<string, unknown>;
    try {
      claims = await introspect(token);
    } catch {
      send(503, { error: 'temporarily_unavailable', error_description: 'The provider could not check the token.' });
      return;
    }
    if (claims.active !== true) {
      send(401, { error: 'invalid_token', error_description: 'The token is not active.' }, { 'www-authenticate': 'Bearer error="invalid_token"' });
      return;
    }
    const sub = typeof claims.sub === 'string' ? claims.sub : undefined;
    if (sub !== undefined) record.sub = sub;

    if (record.path !== '/hello') {
      send(404, { error: 'not_found', error_description: 'This demo API has /hello only.' });
      return;
    }
    if (record.method !== 'GET' && record.method !== 'HEAD') {
      send(405, { error: 'method_not_allowed' }, { allow: 'GET, HEAD' });
      return;
    }
    const now = Date.now();
    const exp = typeof claims.exp === 'number' ? claims.exp : undefined;
    send(200, {
      message: `Hello, ${sub ?? 'whoever you are'}! This answer comes from the demo API.`,
      sub: sub ?? null,
      serverTime: new Date(now).toISOString(),
      tokenExpiresInSeconds: exp === undefined ? null : Math.max(0, Math.round(exp - now / 1000)),
      scope: typeof claims.scope === 'string' ? claims.scope : null,
      checkedBy: 'token introspection at the provider',
    });
  }

  const server = createServer((req, res) => {
    const record: DemoApiRequest = {
      method: req.method ?? 'GET',
      path: new URL(req.url ?? '/', 'http://api.invalid').pathname,
      status: 0,
      at: Date.now(),
    };
    requests.push(record);
    if (requests.length > KEEP_REQUESTS) requests.splice(0, requests.length - KEEP_REQUESTS);
    req.resume();
    handle(req, res, record).catch(() => {
      record.status = 500;
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'application/json' });
      res.end('{"error":"server_error"}');
    });
  });
  // The live feed: the token is checked on the upgrade, as an API that trusts only tokens does.
  const live = webSocketServer();
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    // Not in requests(): those are the page's API calls, which tests count.
    const record: DemoApiRequest = { method: 'WS', path: new URL(req.url ?? '/', 'http://api.invalid').pathname, status: 0, at: Date.now() };
    const token = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '')?.[1];
    const refuse = (status: number) => {
      record.status = status;
      socket.end(`HTTP/1.1 ${status} ${status === 401 ? 'Unauthorized' : 'Service Unavailable'}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
    };
    if (!token) {
      refuse(401);
      return;
    }
    introspect(token).then(
      (claims) => {
        if (claims.active !== true) {
          refuse(401);
          return;
        }
        const sub = typeof claims.sub === 'string' ? claims.sub : null;
        if (sub !== null) record.sub = sub;
        record.status = 101;
        live.handleUpgrade(req, socket, head, (ws) => {
          let n = 0;
          const send = () => ws.readyState === 1 && ws.send(JSON.stringify({ type: 'tick', n: ++n, sub, serverTime: new Date().toISOString() }));
          send();
          const ticker = setInterval(send, 1000);
          ws.on('message', (data) => ws.readyState === 1 && ws.send(JSON.stringify({ type: 'echo', data: data.toString() })));
          ws.on('close', () => clearInterval(ticker));
        });
      },
      () => refuse(503),
    );
  });
  const port = await listenLoopback(server, options.port);
  return {
    url: loopbackUrl(port),
    requests: () => requests.map((r) => ({ ...r })),
    close: () => {
      for (const ws of live.clients) ws.terminate();
      return closeServer(server);
    },
  };
}
